// Aravis' fake GigE Vision camera served on the loopback interface by the
// test process itself (ArvGvFakeCamera): a real network camera for the
// aravis:// backend, reached at aravis://127.0.0.1 by unicast GVCP/GVSP on
// 127.0.0.1 only.  unplug() destroys it — the camera stops answering and
// streaming, as when a cable is pulled — and plug() serves it again.
// Only one can listen on 127.0.0.1 at a time: tests using it are not run in
// parallel (meson is_parallel : false).
#pragma once

#include <arv.h>
#include <glib.h>

#include <string>

namespace livemicro::test {

class FakeGvCamera {
public:
  static constexpr const char *kUri = "aravis://127.0.0.1";

  // `pattern` fills each frame (nullptr: Aravis' own ramp); its data
  // argument is the ArvFakeCamera (registers: width, height, …).
  explicit FakeGvCamera (ArvFakeCameraFillPattern pattern = nullptr) : pattern_ (pattern) { plug (); }
  ~FakeGvCamera () { unplug (); }

  bool plug ()
  {
    if (gv_)
      return true;
    gv_ = arv_gv_fake_camera_new ("lo", "GV01");
    if (!arv_gv_fake_camera_is_running (gv_)) {
      g_object_unref (gv_);
      gv_ = nullptr;
      return false;
    }
    if (pattern_)
      arv_fake_camera_set_fill_pattern (arv_gv_fake_camera_get_fake_camera (gv_), pattern_,
                                        arv_gv_fake_camera_get_fake_camera (gv_));
    return true;
  }
  void unplug ()
  {
    if (gv_)
      g_object_unref (gv_);
    gv_ = nullptr;
  }
  bool running () const { return gv_ != nullptr; }

private:
  ArvGvFakeCamera *gv_ = nullptr;
  ArvFakeCameraFillPattern pattern_;
};

} // namespace livemicro::test
