// The demo page served at "/" by `wsig serve` with no routes: Pode's signal example, self-contained.
#include <wsig/server.hpp>

namespace wsig {

namespace {

constexpr char const page[] = R"~~(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wsig signal demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  form { display: flex; gap: .5rem; }
  #message { flex: 1; padding: .4rem; }
  #messages { list-style: none; padding: 0; }
  #messages li { padding: .3rem 0; border-bottom: 1px solid #ddd; word-break: break-word; }
  #status { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<h1>wsig signal demo</h1>
<p>Every open tab sees every message. Send <code>[date]</code> to broadcast the server's date.</p>
<form id="form">
  <input id="message" type="text" autocomplete="off" placeholder="a message" autofocus>
  <button id="send" type="submit">Send</button>
</form>
<p id="status">connecting...</p>
<ul id="messages"></ul>
<script>
(function () {
  "use strict";
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var url = scheme + location.host + "/msg";
  var list = document.getElementById("messages");
  var input = document.getElementById("message");
  var status = document.getElementById("status");
  var socket = null;
  var queue = [];

  function connect() {
    socket = new WebSocket(url);
    socket.onopen = function () {
      status.textContent = "connected to " + url;
      while (queue.length) socket.send(queue.shift());
    };
    socket.onmessage = function (event) {
      var li = document.createElement("li");
      li.textContent = typeof event.data === "string" ? event.data : "(binary message)";
      list.appendChild(li);
    };
    socket.onclose = function (event) {
      status.textContent = "disconnected (" + event.code + "); reconnecting...";
      setTimeout(connect, 1000);
    };
  }

  document.getElementById("form").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    if (!text) return;
    var data = JSON.stringify({ message: text });
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
    else queue.push(data);
    input.value = "";
    input.focus();
  });

  connect();
})();
</script>
</body>
</html>
)~~";

}  // namespace

std::string_view demo_page() noexcept {
    return {page, sizeof page - 1};
}

}  // namespace wsig
