// The library's error type, the exit-code table, and how a result's error becomes an exception.
#include <wsig/error.hpp>
#include <wsig/exit_code.hpp>

#include <stdexcept>

namespace wsig {

void throw_exception_from_error(error const& e, boost::source_location const&) {
    throw std::runtime_error(e.message);
}

exit_code_doc const exit_code_table[14] = {
    {exit_code::ok, "success (verify valid, listen done, serve stopped gracefully)"},
    {exit_code::negative, "a negative answer: verify invalid, --count/--until not met, send delivered to nobody"},
    {exit_code::usage, "usage error: unknown flag or subcommand, bad duration or size, no subcommand"},
    {exit_code::data_error, "bad data (invalid JSON with --json)"},
    {exit_code::no_input, "an input file cannot be read"},
    {exit_code::no_user, "addressee unknown (push answered 404)"},
    {exit_code::unavailable, "unavailable (connection refused or reset, 5xx)"},
    {exit_code::protocol, "protocol error (upgrade not 101, bad accept key, TLS failure, close 1002/1007/1009)"},
    {exit_code::no_permission, "permission denied (401/403, bad signature)"},
    {exit_code::config, "configuration error (bad certificate, unreadable secret or key file, port in use)"},
    {exit_code::threshold, "bench: a --threshold did not hold"},
    {exit_code::timeout, "--timeout expired"},
    {exit_code::sigint, "interrupted by SIGINT (listen, send, bench); serve exits 0 on a signal"},
    {exit_code::sigterm, "interrupted by SIGTERM (listen, send, bench); serve exits 0 on a signal"},
};

}  // namespace wsig
