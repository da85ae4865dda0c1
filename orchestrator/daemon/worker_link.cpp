#include "worker_link.h"

#include <gio/gio.h>

#include <cstring>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace livemicro::orchestrator {

struct WorkerLink::Incarnation {
  int fd = -1;
  GSubprocess *process = nullptr;
  std::unique_ptr<wire::Writer> writer;
  std::atomic<bool> alive{true};
  std::thread reader;
  // Main loop: the process has ended (why, in words), and every message it
  // wrote before has been delivered (the reader reached its end and the
  // decoder handed on what came before).  Its end is reported when both hold,
  // so a worker that says why it fails and exits is heard before it is
  // counted down.
  bool exited = false, drained = false;
  std::string why;
  guint drain_timeout = 0;
  ~Incarnation ()
  {
    if (drain_timeout)
      g_source_remove (drain_timeout);
    if (fd >= 0)
      ::shutdown (fd, SHUT_RDWR);
    if (reader.joinable ())
      reader.join ();
    if (fd >= 0)
      ::close (fd);
    g_clear_object (&process);
  }
};

WorkerLink::WorkerLink (std::string name, std::string worker_path, Callbacks callbacks)
    : name_ (std::move (name)), worker_path_ (std::move (worker_path)), callbacks_ (std::move (callbacks))
{}

WorkerLink::~WorkerLink ()
{
  stop ();
}

void
WorkerLink::start ()
{
  stopping_ = false;
  spawn ();
}

void
WorkerLink::spawn ()
{
  restart_source_ = 0;
  int fds[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    callbacks_.down ("socketpair failed");
    return;
  }
  g_autoptr (GSubprocessLauncher) launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_NONE);
  g_subprocess_launcher_take_fd (launcher, fds[1], 3);
  g_autoptr (GError) error = nullptr;
  GSubprocess *proc = g_subprocess_launcher_spawn (launcher, &error, worker_path_.c_str (), "--fd", "3",
                                                   "--name", name_.c_str (), nullptr);
  if (!proc) {
    ::close (fds[0]);
    std::string why = std::string ("cannot start ") + worker_path_ + ": " + error->message;
    g_warning ("%s", why.c_str ());
    auto inc = std::make_shared<Incarnation> ();
    on_exit (inc, why);
    return;
  }
  auto inc = std::make_shared<Incarnation> ();
  inc->fd = fds[0];
  inc->process = proc;
  inc->writer = std::make_unique<wire::Writer> (inc->fd);
  current_ = inc;

  // Frames and events from the worker.
  std::weak_ptr<Incarnation> weak = inc;
  inc->reader = std::thread (
      [this, weak, frame_cb = callbacks_.frame, fd = inc->fd] { read_messages (weak, fd, frame_cb); });
  watch_exit (proc, inc);
}

// The reader thread: frames go to the frame callback at once; events (JSON)
// and fields of nuclei (packed) are decoded by decoder_, in the order they
// came, and handed to the main loop.
void
WorkerLink::read_messages (std::weak_ptr<Incarnation> weak, int fd, const Callbacks::Frame &frame_cb)
{
  wire::Type type;
  std::vector<uint8_t> body;
  while (wire::read_message (fd, type, body)) {
    if (type == wire::Type::kFrame && body.size () >= sizeof (wire::FrameHeader)) {
      wire::FrameHeader h;
      std::memcpy (&h, body.data (), sizeof h);
      frame_cb (h, body.data () + sizeof h, body.size () - sizeof h);
    } else if (type == wire::Type::kEvent || type == wire::Type::kNuclei) {
      decoder_.push ([this, weak, type, body = std::move (body)] {
        std::optional<WorkerEvent> e;
        if (type == wire::Type::kEvent) {
          e = decode_event (std::string (body.begin (), body.end ()));
        } else if (auto field = unpack_field (body.data (), body.size ())) {
          e = event::Nuclei{std::move (*field)};
        }
        post_event (weak, std::move (e));
      });
      body = {};
    }
  }
  // In order after the last event: this incarnation has said all it will.
  decoder_.push ([this, weak] { post_event (weak, std::nullopt, true); });
}

// From decoder_: the event to on_event (or the end of the worker's
// messages to end_if_done), queued on the main loop in order (never run
// here, as g_main_context_invoke would whenever the main context is free
// to take, between its iterations).
void
WorkerLink::post_event (std::weak_ptr<Incarnation> weak, std::optional<WorkerEvent> e, bool end)
{
  struct Ev {
    WorkerLink *self;
    std::weak_ptr<Incarnation> inc;
    std::optional<WorkerEvent> event;
    bool end;
  };
  g_idle_add_full (
      G_PRIORITY_DEFAULT,
      [] (gpointer d) -> gboolean {
        std::unique_ptr<Ev> ev (static_cast<Ev *> (d));
        auto inc = ev->inc.lock ();
        if (inc && ev->end) {
          inc->drained = true;
          ev->self->end_if_done (inc);
        } else if (inc && inc->alive && inc == ev->self->current_)
          ev->self->on_event (*inc, std::move (ev->event));
        return G_SOURCE_REMOVE;
      },
      new Ev{this, std::move (weak), std::move (e), end}, nullptr);
}

// On the main loop, from the current incarnation: Hello is answered with the
// capture to start, Started resets the failure count, the rest go up.
void
WorkerLink::on_event (Incarnation &inc, std::optional<WorkerEvent> e)
{
  if (!e) {
    g_warning ("worker '%s' sent a message that does not decode; dropped", name_.c_str ());
    return;
  }
  if (std::holds_alternative<event::Hello> (*e)) {
    inc.writer->send_json (wire::Type::kCommand, encode (command::Start{capture_}));
  } else if (std::holds_alternative<event::Started> (*e)) {
    failures_in_a_row_ = 0;
    callbacks_.started ();
  } else {
    callbacks_.event (*e);
  }
}

// Marks `inc` exited (why, in words) when its process ends; end_if_done
// reports it once its messages are all delivered.
void
WorkerLink::watch_exit (GSubprocess *proc, const std::shared_ptr<Incarnation> &inc)
{
  g_subprocess_wait_async (
      proc, nullptr,
      [] (GObject *src, GAsyncResult *res, gpointer data) {
        auto *holder = static_cast<std::pair<WorkerLink *, std::weak_ptr<Incarnation>> *> (data);
        std::unique_ptr<std::pair<WorkerLink *, std::weak_ptr<Incarnation>>> own (holder);
        g_subprocess_wait_finish (G_SUBPROCESS (src), res, nullptr);
        auto inc = holder->second.lock ();
        if (!inc)
          return;
        GSubprocess *p = G_SUBPROCESS (src);
        std::string why;
        if (g_subprocess_get_if_signaled (p))
          why = "killed by signal " + std::to_string (g_subprocess_get_term_sig (p));
        else
          why = "exited with status " + std::to_string (g_subprocess_get_exit_status (p));
        inc->exited = true;
        inc->why = why;
        holder->first->end_if_done (inc);
      },
      new std::pair<WorkerLink *, std::weak_ptr<Incarnation>> (this, inc));
}

// The process has exited: once its last messages are delivered, it is down.
// Its socket ends with it, unless a child it left holds a copy: then the
// reader is cut off after a moment rather than waited for.
void
WorkerLink::end_if_done (const std::shared_ptr<Incarnation> &inc)
{
  if (!inc->exited || !inc->alive)
    return;
  if (!inc->drained) {
    if (!inc->drain_timeout)
      inc->drain_timeout = g_timeout_add (
          500,
          [] (gpointer d) -> gboolean {
            auto *inc = static_cast<Incarnation *> (d);
            inc->drain_timeout = 0;
            ::shutdown (inc->fd, SHUT_RDWR);
            return G_SOURCE_REMOVE;
          },
          inc.get ());
    return;
  }
  if (inc->drain_timeout) {
    g_source_remove (inc->drain_timeout);
    inc->drain_timeout = 0;
  }
  on_exit (inc, inc->why);
}

void
WorkerLink::on_exit (std::shared_ptr<Incarnation> inc, const std::string &why)
{
  inc->alive = false;
  if (current_ == inc)
    current_.reset ();
  // Dropping the last reference joins the reader thread (it ends at EOF);
  // do that off the main loop so a reader busy pushing a frame never blocks it.
  reaper_.push ([inc] {});
  callbacks_.down (why);
  if (stopping_)
    return;
  // Restart at once (viewers are waiting); back off (to 1 s) when it keeps
  // failing before it ever started.
  failures_in_a_row_++;
  guint delay_ms
      = failures_in_a_row_ <= 1 ? 0 : std::min (1000, 100 * (1 << std::min (failures_in_a_row_, 4)));
  restarts_++;
  restart_source_ = g_timeout_add (
      delay_ms,
      [] (gpointer d) -> gboolean {
        static_cast<WorkerLink *> (d)->spawn ();
        return G_SOURCE_REMOVE;
      },
      this);
}

void
WorkerLink::stop ()
{
  stopping_ = true;
  if (restart_source_) {
    g_source_remove (restart_source_);
    restart_source_ = 0;
  }
  if (auto inc = current_) {
    inc->writer->send_json (wire::Type::kCommand, encode (command::Quit{}));
    // Give it a moment to stop its pipeline cleanly, then insist.
    for (int i = 0; i < 100 && inc->alive; i++) {
      if (g_subprocess_get_identifier (inc->process) == nullptr)
        break;
      g_main_context_iteration (nullptr, FALSE);
      g_usleep (10000);
    }
    if (inc->alive && g_subprocess_get_identifier (inc->process))
      g_subprocess_force_exit (inc->process);
    current_.reset ();
  }
}

bool
WorkerLink::command (const std::string &json)
{
  auto inc = current_;
  return inc && inc->alive && inc->writer->send_json (wire::Type::kCommand, json);
}

bool
WorkerLink::running () const
{
  return current_ && current_->alive;
}

int
WorkerLink::pid () const
{
  if (!current_ || !current_->process)
    return 0;
  const char *id = g_subprocess_get_identifier (current_->process);
  return id ? atoi (id) : 0;
}

} // namespace livemicro::orchestrator
