// A viewer page's link to its microscope's home node, for a session whose
// view is served on this node of the edge cloud (docs/edge-cloud.md): the
// page's video comes from the view relayed here, its events (state,
// analysis, control, presence, annotations) from the home node over this
// WebSocket, opened with the page's own token.  What the page sends that is
// not about its video (stats, pointers) goes up the same way.
//
// A client WebSocket (libsoup 3) on the main loop; it does nothing after
// it is destroyed (the connect in flight is cancelled).
#pragma once

#include <libsoup/soup.h>

#include <functional>
#include <memory>
#include <string>

namespace livemicro::orchestrator {

class HomeLink {
public:
  using OnText = std::function<void (const std::string &text)>;
  // code: the close code the home node sent, 0 when it could not be reached.
  using OnClosed = std::function<void (int code, const std::string &reason)>;

  // Connects to `url` (http(s)://host:port/ws/{session}) and sends `hello`
  // once open; `on_text` gets every text message, `on_closed` the end (once).
  HomeLink (const std::string &url, std::string hello, OnText on_text, OnClosed on_closed);
  ~HomeLink ();
  HomeLink (const HomeLink &) = delete;
  HomeLink &operator= (const HomeLink &) = delete;

  // Sends a text message once open (dropped before: the page repeats what
  // matters, stats and pointers, every second).
  void send (const std::string &text);

private:
  static void on_connected (GObject *source, GAsyncResult *res, gpointer data);
  void closed (int code, const std::string &reason);

  std::string hello_;
  OnText on_text_;
  OnClosed on_closed_;
  SoupSession *session_ = nullptr;
  GCancellable *cancel_ = nullptr;
  SoupWebsocketConnection *conn_ = nullptr;
  gulong message_handler_ = 0, closed_handler_ = 0;
  bool ended_ = false;
};

} // namespace livemicro::orchestrator
