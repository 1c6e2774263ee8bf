// The one Catch2 include of the unit tests: v2 (Debian 12) or v3, using only what both share.
#pragma once

#if defined(WSIG_CATCH3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
