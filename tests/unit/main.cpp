// The test runner's main for Catch2 v2 (v3 links Catch2WithMain instead).
#if !defined(WSIG_CATCH3)
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
