// See home_link.h.
#include "home_link.h"

namespace livemicro::orchestrator {

HomeLink::HomeLink (const std::string &url, std::string hello, OnText on_text, OnClosed on_closed)
    : hello_ (std::move (hello)), on_text_ (std::move (on_text)), on_closed_ (std::move (on_closed))
{
  session_ = soup_session_new_with_options ("timeout", 5, nullptr);
  cancel_ = g_cancellable_new ();
  SoupMessage *msg = soup_message_new ("GET", url.c_str ());
  if (!msg) {
    // Reported from the main loop, as a failed connect would be.
    g_cancellable_cancel (cancel_);
    g_idle_add_full (
        G_PRIORITY_DEFAULT,
        [] (gpointer d) -> gboolean {
          static_cast<HomeLink *> (d)->closed (0, "the home node has no usable address");
          return G_SOURCE_REMOVE;
        },
        this, nullptr);
    return;
  }
  soup_session_websocket_connect_async (session_, msg, nullptr, nullptr, G_PRIORITY_DEFAULT, cancel_,
                                        on_connected, this);
  g_object_unref (msg);
}

HomeLink::~HomeLink ()
{
  ended_ = true;
  g_idle_remove_by_data (this);
  // The connect in flight finishes as cancelled and touches nothing of ours.
  g_cancellable_cancel (cancel_);
  g_object_unref (cancel_);
  if (conn_) {
    g_signal_handler_disconnect (conn_, message_handler_);
    g_signal_handler_disconnect (conn_, closed_handler_);
    if (soup_websocket_connection_get_state (conn_) == SOUP_WEBSOCKET_STATE_OPEN)
      soup_websocket_connection_close (conn_, SOUP_WEBSOCKET_CLOSE_GOING_AWAY, "the viewer left");
    g_object_unref (conn_);
  }
  soup_session_abort (session_);
  g_object_unref (session_);
}

void
HomeLink::on_connected (GObject *source, GAsyncResult *res, gpointer data)
{
  g_autoptr (GError) error = nullptr;
  SoupWebsocketConnection *conn = soup_session_websocket_connect_finish (SOUP_SESSION (source), res, &error);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
    if (conn)
      g_object_unref (conn);
    return; // destroyed: `data` is gone
  }
  auto *self = static_cast<HomeLink *> (data);
  if (!conn) {
    self->closed (0, error ? error->message : "no answer");
    return;
  }
  self->conn_ = conn;
  // Nucleus outlines run to hundreds of kB a message.
  soup_websocket_connection_set_max_incoming_payload_size (conn, 16u << 20);
  self->message_handler_ = g_signal_connect (
      conn, "message", G_CALLBACK (+[] (SoupWebsocketConnection *, gint type, GBytes *bytes, gpointer d) {
        auto *link = static_cast<HomeLink *> (d);
        if (type != SOUP_WEBSOCKET_DATA_TEXT || link->ended_)
          return;
        gsize len = 0;
        const char *text = static_cast<const char *> (g_bytes_get_data (bytes, &len));
        link->on_text_ (std::string (text ? text : "", len));
      }),
      self);
  self->closed_handler_
      = g_signal_connect (conn, "closed", G_CALLBACK (+[] (SoupWebsocketConnection *c, gpointer d) {
                            const char *reason = soup_websocket_connection_get_close_data (c);
                            static_cast<HomeLink *> (d)->closed (soup_websocket_connection_get_close_code (c),
                                                                 reason ? reason : "");
                          }),
                          self);
  soup_websocket_connection_send_text (conn, self->hello_.c_str ());
}

void
HomeLink::send (const std::string &text)
{
  if (!ended_ && conn_ && soup_websocket_connection_get_state (conn_) == SOUP_WEBSOCKET_STATE_OPEN)
    soup_websocket_connection_send_text (conn_, text.c_str ());
}

void
HomeLink::closed (int code, const std::string &reason)
{
  if (ended_)
    return;
  ended_ = true;
  on_closed_ (code, reason); // may destroy this
}

} // namespace livemicro::orchestrator
