#include "ws_guard.h"

#include <gio/gio.h>

namespace livemicro::orchestrator {

// ---- LmCountingInputStream: a pollable input stream that counts what it
// reads and, past the limit, stops reading and reports it once. -----------

G_BEGIN_DECLS
#define LM_TYPE_COUNTING_INPUT_STREAM (lm_counting_input_stream_get_type ())
G_DECLARE_FINAL_TYPE (LmCountingInputStream, lm_counting_input_stream, LM, COUNTING_INPUT_STREAM,
                      GInputStream)
G_END_DECLS

struct _LmCountingInputStream {
  GInputStream parent;
  GInputStream *base; // pollable
  gsize limit;
  gsize counted;
  gboolean tripped;
  void (*on_trip) (gpointer);
  GWeakRef target; // passed to on_trip (the WebSocket connection)
};

static void lm_counting_input_stream_pollable_init (GPollableInputStreamInterface *iface);

G_DEFINE_TYPE_WITH_CODE (LmCountingInputStream, lm_counting_input_stream, G_TYPE_INPUT_STREAM,
                         G_IMPLEMENT_INTERFACE (G_TYPE_POLLABLE_INPUT_STREAM,
                                                lm_counting_input_stream_pollable_init))

static void
counted (LmCountingInputStream *self, gssize n)
{
  if (n <= 0 || self->tripped)
    return;
  self->counted += (gsize)n;
  if (self->counted <= self->limit)
    return;
  self->tripped = TRUE;
  // Not from inside libsoup's read loop: on the next main-loop turn.
  GObject *target = G_OBJECT (g_weak_ref_get (&self->target));
  if (!target)
    return;
  struct Trip {
    void (*fn) (gpointer);
    GObject *target;
  };
  g_idle_add (
      [] (gpointer d) -> gboolean {
        auto *t = static_cast<Trip *> (d);
        t->fn (t->target);
        g_object_unref (t->target);
        delete t;
        return G_SOURCE_REMOVE;
      },
      new Trip{self->on_trip, target});
}

static gssize
counting_read (GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable, GError **error)
{
  auto *self = LM_COUNTING_INPUT_STREAM (stream);
  if (self->tripped) {
    g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE, "message too big");
    return -1;
  }
  gssize n = g_input_stream_read (self->base, buffer, count, cancellable, error);
  counted (self, n);
  return n;
}

static gboolean
counting_close (GInputStream *, GCancellable *, GError **)
{
  return TRUE; // the base stream is closed with its connection
}

static gboolean
counting_can_poll (GPollableInputStream *stream)
{
  auto *self = LM_COUNTING_INPUT_STREAM (stream);
  return g_pollable_input_stream_can_poll (G_POLLABLE_INPUT_STREAM (self->base));
}

static gboolean
counting_is_readable (GPollableInputStream *stream)
{
  auto *self = LM_COUNTING_INPUT_STREAM (stream);
  return !self->tripped && g_pollable_input_stream_is_readable (G_POLLABLE_INPUT_STREAM (self->base));
}

static GSource *
counting_create_source (GPollableInputStream *stream, GCancellable *cancellable)
{
  auto *self = LM_COUNTING_INPUT_STREAM (stream);
  if (self->tripped) // a source that never fires: nothing more is read
    return g_pollable_source_new (G_OBJECT (stream));
  GSource *base = g_pollable_input_stream_create_source (G_POLLABLE_INPUT_STREAM (self->base), cancellable);
  GSource *source = g_pollable_source_new_full (stream, base, cancellable);
  g_source_unref (base);
  return source;
}

static gssize
counting_read_nonblocking (GPollableInputStream *stream, void *buffer, gsize count, GError **error)
{
  auto *self = LM_COUNTING_INPUT_STREAM (stream);
  if (self->tripped) {
    g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "message too big: not reading");
    return -1;
  }
  gssize n = g_pollable_input_stream_read_nonblocking (G_POLLABLE_INPUT_STREAM (self->base), buffer, count,
                                                       nullptr, error);
  counted (self, n);
  return n;
}

static void
lm_counting_input_stream_pollable_init (GPollableInputStreamInterface *iface)
{
  iface->can_poll = counting_can_poll;
  iface->is_readable = counting_is_readable;
  iface->create_source = counting_create_source;
  iface->read_nonblocking = counting_read_nonblocking;
}

static void
lm_counting_input_stream_finalize (GObject *object)
{
  auto *self = LM_COUNTING_INPUT_STREAM (object);
  g_clear_object (&self->base);
  g_weak_ref_clear (&self->target);
  G_OBJECT_CLASS (lm_counting_input_stream_parent_class)->finalize (object);
}

static void
lm_counting_input_stream_class_init (LmCountingInputStreamClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = lm_counting_input_stream_finalize;
  G_INPUT_STREAM_CLASS (klass)->read_fn = counting_read;
  G_INPUT_STREAM_CLASS (klass)->close_fn = counting_close;
}

static void
lm_counting_input_stream_init (LmCountingInputStream *self)
{
  g_weak_ref_init (&self->target, nullptr);
}

// ---- LmGuardedIOStream: the stolen connection with the counting input. ---

G_BEGIN_DECLS
#define LM_TYPE_GUARDED_IO_STREAM (lm_guarded_io_stream_get_type ())
G_DECLARE_FINAL_TYPE (LmGuardedIOStream, lm_guarded_io_stream, LM, GUARDED_IO_STREAM, GIOStream)
G_END_DECLS

struct _LmGuardedIOStream {
  GIOStream parent;
  GIOStream *base;
  LmCountingInputStream *input;
};

G_DEFINE_TYPE (LmGuardedIOStream, lm_guarded_io_stream, G_TYPE_IO_STREAM)

static GInputStream *
guarded_get_input (GIOStream *stream)
{
  return G_INPUT_STREAM (LM_GUARDED_IO_STREAM (stream)->input);
}

static GOutputStream *
guarded_get_output (GIOStream *stream)
{
  return g_io_stream_get_output_stream (LM_GUARDED_IO_STREAM (stream)->base);
}

static gboolean
guarded_close (GIOStream *stream, GCancellable *cancellable, GError **error)
{
  return g_io_stream_close (LM_GUARDED_IO_STREAM (stream)->base, cancellable, error);
}

// Closed on the caller's context (the socket is used there), not in a thread.
static void
guarded_close_async (GIOStream *stream, int priority, GCancellable *cancellable, GAsyncReadyCallback callback,
                     gpointer user_data)
{
  GTask *task = g_task_new (stream, cancellable, callback, user_data);
  g_io_stream_close_async (
      LM_GUARDED_IO_STREAM (stream)->base, priority, cancellable,
      [] (GObject *base, GAsyncResult *res, gpointer d) {
        GTask *t = G_TASK (d);
        GError *error = nullptr;
        if (g_io_stream_close_finish (G_IO_STREAM (base), res, &error))
          g_task_return_boolean (t, TRUE);
        else
          g_task_return_error (t, error);
        g_object_unref (t);
      },
      task);
}

static gboolean
guarded_close_finish (GIOStream *, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

static void
lm_guarded_io_stream_finalize (GObject *object)
{
  auto *self = LM_GUARDED_IO_STREAM (object);
  g_clear_object (&self->input);
  g_clear_object (&self->base);
  G_OBJECT_CLASS (lm_guarded_io_stream_parent_class)->finalize (object);
}

static void
lm_guarded_io_stream_class_init (LmGuardedIOStreamClass *klass)
{
  G_OBJECT_CLASS (klass)->finalize = lm_guarded_io_stream_finalize;
  GIOStreamClass *io = G_IO_STREAM_CLASS (klass);
  io->get_input_stream = guarded_get_input;
  io->get_output_stream = guarded_get_output;
  io->close_fn = guarded_close;
  io->close_async = guarded_close_async;
  io->close_finish = guarded_close_finish;
}

static void
lm_guarded_io_stream_init (LmGuardedIOStream *)
{}

// ---- the upgrade ---------------------------------------------------------

bool
is_websocket_request (SoupServerMessage *msg)
{
  SoupMessageHeaders *h = soup_server_message_get_request_headers (msg);
  return soup_message_headers_header_contains (h, "Upgrade", "websocket");
}

namespace {

struct Pending {
  size_t max_message_bytes;
  WebsocketAccepted accepted;
  gpointer user_data;
};

void
reset_count (LmCountingInputStream *input)
{
  input->counted = 0;
}

void
complete_upgrade (SoupServerMessage *msg, gpointer data)
{
  auto *p = static_cast<Pending *> (data);
  g_object_ref (msg);
  GIOStream *stolen = soup_server_message_steal_connection (msg);
  auto *counter = LM_COUNTING_INPUT_STREAM (g_object_new (LM_TYPE_COUNTING_INPUT_STREAM, nullptr));
  counter->base = G_INPUT_STREAM (g_object_ref (g_io_stream_get_input_stream (stolen)));
  counter->limit = p->max_message_bytes + 64; // plus the frames' own headers
  counter->on_trip = [] (gpointer conn) {
    auto *c = SOUP_WEBSOCKET_CONNECTION (conn);
    if (soup_websocket_connection_get_state (c) == SOUP_WEBSOCKET_STATE_OPEN)
      soup_websocket_connection_close (c, SOUP_WEBSOCKET_CLOSE_TOO_BIG, "message too big");
  };
  auto *guarded = LM_GUARDED_IO_STREAM (g_object_new (LM_TYPE_GUARDED_IO_STREAM, nullptr));
  guarded->base = stolen; // takes the stolen reference
  guarded->input = counter;
  GUri *uri = soup_server_message_get_uri (msg);
  const char *origin = soup_message_headers_get_one (soup_server_message_get_request_headers (msg), "Origin");
  SoupWebsocketConnection *conn = soup_websocket_connection_new (
      G_IO_STREAM (guarded), uri, SOUP_WEBSOCKET_CONNECTION_SERVER, origin, nullptr, nullptr);
  g_object_unref (guarded);
  soup_websocket_connection_set_max_incoming_payload_size (conn, p->max_message_bytes);
  g_weak_ref_set (&counter->target, conn);
  // A whole message (or a pong) arrived: count afresh.
  g_signal_connect_object (conn, "message",
                           G_CALLBACK (+[] (SoupWebsocketConnection *, gint, GBytes *, gpointer d) {
                             reset_count (LM_COUNTING_INPUT_STREAM (d));
                           }),
                           counter, G_CONNECT_DEFAULT);
  g_signal_connect_object (conn, "pong", G_CALLBACK (+[] (SoupWebsocketConnection *, GBytes *, gpointer d) {
                             reset_count (LM_COUNTING_INPUT_STREAM (d));
                           }),
                           counter, G_CONNECT_DEFAULT);
  p->accepted (msg, conn, p->user_data);
  g_object_unref (conn);
  g_object_unref (msg);
}

} // namespace

bool
accept_websocket (SoupServerMessage *msg, size_t max_message_bytes, WebsocketAccepted accepted,
                  gpointer user_data, std::string *why)
{
  g_autoptr (GError) error = nullptr;
  if (!soup_websocket_server_check_handshake (msg, nullptr, nullptr, nullptr, &error)) {
    *why = std::string ("WebSocket handshake: ") + error->message;
    return false;
  }
  soup_websocket_server_process_handshake (msg, nullptr, nullptr, nullptr, nullptr);
  g_signal_connect_data (
      msg, "wrote-informational", G_CALLBACK (complete_upgrade),
      new Pending{max_message_bytes, accepted, user_data},
      [] (gpointer d, GClosure *) { delete static_cast<Pending *> (d); }, G_CONNECT_DEFAULT);
  return true;
}

} // namespace livemicro::orchestrator
