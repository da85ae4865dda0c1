// Work off the thread that asks for it, on one owned thread; destroying the
// Background waits for what was queued.  Used where a streaming or main-loop
// thread must not block (encoding a still, joining a reader thread).
#pragma once

#include <glib.h>

#include <functional>
#include <memory>

namespace livemicro::orchestrator {

class Background {
public:
  Background () : pool_ (g_thread_pool_new (run, nullptr, 1, FALSE, nullptr)) {}
  ~Background () { g_thread_pool_free (pool_, FALSE, TRUE); }
  Background (const Background &) = delete;
  Background &operator= (const Background &) = delete;
  void push (std::function<void ()> fn)
  {
    g_thread_pool_push (pool_, new std::function<void ()> (std::move (fn)), nullptr);
  }

private:
  static void run (gpointer data, gpointer)
  {
    std::unique_ptr<std::function<void ()>> fn (static_cast<std::function<void ()> *> (data));
    (*fn) ();
  }
  GThreadPool *pool_;
};

} // namespace livemicro::orchestrator
