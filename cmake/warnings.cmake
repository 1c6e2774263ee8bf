# Warning and sanitizer flags as INTERFACE targets, linked by every target of the project.
add_library(wsig_warnings INTERFACE)
target_compile_options(wsig_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
  -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wimplicit-fallthrough)
# With -O2, g++ 12 reports null dereferences inside Asio's io_context executor and "maybe
# uninitialized" strings inside a std::variant (plan_upgrade's result) that its own inlining makes
# up, on paths that cannot run: -Wnull-dereference only in Debug, -Wmaybe-uninitialized (part of
# -Wall) only unoptimised. Debug and the ASan build keep both. (clang, used for the fuzzers, has
# no -Wmaybe-uninitialized and refuses the option under -Werror.) The same inlining makes g++ 12
# report `"/" + std::string(...)` as a memcpy of 2^63 overlapping bytes (-Wrestrict, GCC bug 105329):
# off when optimising too.
target_compile_options(wsig_warnings INTERFACE $<$<CONFIG:Debug>:-Wnull-dereference>
  $<$<AND:$<CXX_COMPILER_ID:GNU>,$<NOT:$<CONFIG:Debug>>>:-Wno-maybe-uninitialized -Wno-restrict>)
if(WSIG_WERROR)
  target_compile_options(wsig_warnings INTERFACE -Werror)
endif()
if(WSIG_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # g++ warns that TSan does not model atomic_thread_fence, which Asio uses (std_fenced_block and
  # atomic_count): a note about the tool, not about our code; tests/tsan.supp says what it means.
  target_compile_options(wsig_warnings INTERFACE -Wno-tsan)
endif()

add_library(wsig_sanitizers INTERFACE)
if(WSIG_SANITIZE)
  target_compile_options(wsig_sanitizers INTERFACE -fsanitize=${WSIG_SANITIZE} -fno-omit-frame-pointer
    -fno-sanitize-recover=all)
  target_link_options(wsig_sanitizers INTERFACE -fsanitize=${WSIG_SANITIZE})
endif()
