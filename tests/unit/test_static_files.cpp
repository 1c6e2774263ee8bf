// Static files: index pages, content types, and every way out of the root refused.
#include "catch.hpp"

#include "static_files.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

struct site {
    fs::path root;
    site() {
        root = fs::temp_directory_path() / ("wsig-static-" + std::to_string(::getpid()));
        fs::remove_all(root);
        fs::create_directories(root / "www" / "sub");
        std::ofstream(root / "www" / "index.html") << "<h1>home</h1>";
        std::ofstream(root / "www" / "a.CSS") << "b{}";
        std::ofstream(root / "www" / "sub" / "index.html") << "sub";
        std::ofstream(root / "www" / "data.bin") << "x";
        std::ofstream(root / "secret.txt") << "secret";
        fs::create_symlink(root / "secret.txt", root / "www" / "link-out");
        fs::create_symlink(root / "www" / "a.CSS", root / "www" / "link-in");
        fs::create_directory_symlink(root, root / "www" / "dir-out");
        root = fs::canonical(root);
    }
    ~site() { fs::remove_all(root); }
    fs::path www() const { return root / "www"; }
};

}  // namespace

TEST_CASE("static files: / and directories serve index.html, with content types by extension") {
    site s;
    auto home = wsig::detail::resolve_static(s.www(), "/");
    CHECK(home.status == 200);
    CHECK(home.path == s.www() / "index.html");
    CHECK(home.content_type == "text/html; charset=utf-8");
    CHECK(wsig::detail::resolve_static(s.www(), "/sub/").path == s.www() / "sub" / "index.html");
    CHECK(wsig::detail::resolve_static(s.www(), "/sub").path == s.www() / "sub" / "index.html");
    auto css = wsig::detail::resolve_static(s.www(), "/a.CSS?v=1#top");
    CHECK(css.status == 200);
    CHECK(css.content_type == "text/css; charset=utf-8");
    CHECK(wsig::detail::resolve_static(s.www(), "/data.bin").content_type == "application/octet-stream");
    CHECK(wsig::detail::resolve_static(s.www(), "/link-in").status == 200);  // a symlink inside stays allowed
    CHECK(wsig::detail::resolve_static(s.www(), "/%61.CSS").status == 200);
}

TEST_CASE("static files: traversal, encoded slashes and symlinks out of the root get 404") {
    site s;
    for (auto target : {"/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2fsecret.txt",
                        "/..%2fsecret.txt", "/link-out", "/dir-out/secret.txt", "/sub/../index.html", "/missing",
                        "/sub/missing.html", "relative", "", "/%00", "/index.html%00.png", "/%zz", "/a.CSS%"}) {
        INFO(target);
        CHECK(wsig::detail::resolve_static(s.www(), target).status == 404);
    }
}
