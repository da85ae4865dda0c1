// Whether a camera is online, and its reconnection: when the device goes
// away, lose() closes it and retries connect() every reconnect_ms on a
// background thread until it succeeds (or the camera is destroyed), so the
// streaming thread never waits on a vanished device.
#pragma once

#include <livemicro/hw/error.h>
#include <livemicro/hw/microscope.h>

#include <glib.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace livemicro::hw::camera {

class DeviceLink {
public:
  DeviceLink (std::string uri, int reconnect_ms) : uri_ (std::move (uri)), reconnect_ms_ (reconnect_ms) {}
  ~DeviceLink () { stop (); }

  // Before the owner's members go: no reconnection runs after this.
  void stop ()
  {
    {
      std::lock_guard<std::mutex> l (mutex_);
      quit_ = true;
    }
    cv_.notify_all ();
    if (thread_.joinable ())
      thread_.join ();
  }
  void set_online ()
  {
    std::lock_guard<std::mutex> l (mutex_);
    online_ = true;
    problem_.clear ();
  }
  // Throws Error(kDevice) with the reason while offline.
  void check_online () const
  {
    std::lock_guard<std::mutex> l (mutex_);
    if (!online_)
      throw Error (ErrorKind::kDevice, problem_);
  }
  // Marks the camera offline (once) and reconnects in the background:
  // `close` first, then `connect` until it does not throw.
  void lose (const std::string &why, std::function<void ()> close, std::function<void ()> connect)
  {
    {
      std::lock_guard<std::mutex> l (mutex_);
      if (!online_)
        return;
      online_ = false;
      problem_ = "camera " + uri_ + " is offline: " + why + "; reconnecting";
      g_warning ("%s", problem_.c_str ());
    }
    if (thread_.joinable ())
      thread_.join (); // the previous reconnection has finished
    thread_ = std::thread ([this, close, connect] {
      close ();
      for (;;) {
        {
          std::unique_lock<std::mutex> l (mutex_);
          cv_.wait_for (l, std::chrono::milliseconds (reconnect_ms_), [this] { return quit_; });
          if (quit_)
            return;
        }
        try {
          connect ();
          set_online ();
          g_message ("camera %s is back", uri_.c_str ());
          return;
        } catch (const Error &e) {
          std::lock_guard<std::mutex> l (mutex_);
          problem_ = "camera " + uri_ + " is offline: " + e.what () + "; reconnecting";
        }
      }
    });
  }
  DeviceStatus status () const
  {
    std::lock_guard<std::mutex> l (mutex_);
    DeviceStatus d;
    d.part = "camera";
    d.device = uri_;
    d.online = online_;
    d.problem = online_ ? "" : problem_;
    return d;
  }

private:
  std::string uri_;
  int reconnect_ms_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool quit_ = false;
  bool online_ = false;
  std::string problem_;
  std::thread thread_;
};

} // namespace livemicro::hw::camera
