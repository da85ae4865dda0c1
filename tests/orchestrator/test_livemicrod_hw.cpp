// livemicrod with a microscope made of real-hardware parts: Aravis' fake
// GigE Vision camera served by this test on 127.0.0.1 and a GRBL emulator
// on a pseudo-terminal.  Each goes away and comes back while a player
// watches: the microscope is marked offline with the reason, its session
// and its player's stream stay, commands are refused, and it is online again
// once the device is back — without restarting the worker.
#include "daemon_process.h"
#include "emulator.h"
#include "fake_gv_camera.h"

#include <gtest/gtest.h>

using livemicro::test::Daemon;
using livemicro::test::Emulator;
using livemicro::test::eventually;
using livemicro::test::FakeGvCamera;
using livemicro::test::HttpReply;
using livemicro::test::RtspPlayer;

namespace {

struct Scope {
  bool online = false;
  std::string error, uri;
};

Scope
scope_of (const Daemon &d)
{
  HttpReply r = d.request ("GET", "/api/v1/microscopes/lab");
  Scope s;
  if (JsonObject *o = r.object ()) {
    s.online = json_object_get_boolean_member_with_default (o, "online", FALSE);
    s.error = json_object_get_string_member_with_default (o, "error", "");
    s.uri = json_object_get_string_member_with_default (o, "uri", "");
  }
  return s;
}

} // namespace

TEST (LivemicrodHw, DevicesGoingAwayMarkTheMicroscopeOfflineAndItReconnects)
{
  gst_init (nullptr, nullptr);
  FakeGvCamera gv;
  ASSERT_TRUE (gv.running ());
  Emulator emu ("grbl_emulator.py");
  std::string config = R"({"video": {"framerate": 25, "bitrate_kbps": 500},
    "microscopes": [{"id": "lab", "name": "Lab",
      "camera": "aravis://127.0.0.1?roi=0,0,320,240&timeout_ms=500&reconnect_ms=200",
      "stage": "grbl://)"
                       + emu.link () + R"(?poll_ms=50&reconnect_ms=100",
      "objectives": [{"magnification": 10, "um_per_px": 0.69}, {"magnification": 40, "um_per_px": 0.17}]}]})";
  Daemon d (config);
  ASSERT_TRUE (d.start ()) << d.error ();
  Scope s = scope_of (d);
  EXPECT_TRUE (s.online);
  EXPECT_EQ (s.uri.rfind ("compose:?camera=aravis://127.0.0.1?roi=0,0,320,240%26timeout_ms=500", 0), 0u)
      << s.uri;

  HttpReply created = d.create_session ("alice", "owner", "lab");
  ASSERT_EQ (created.status, 201) << created.body;
  std::string session = created.str ("id");
  RtspPlayer player (created.str ("rtsp_url"), session, created.str ("token"), "tcp", false);
  ASSERT_TRUE (player.wait_frames (10, 20)) << player.error () << d.log ();

  // The stage controller goes away.
  emu.control ("disconnect");
  ASSERT_TRUE (eventually ([&] { return !scope_of (d).online; }, 10)) << d.log ();
  s = scope_of (d);
  EXPECT_NE (s.error.find ("GRBL controller on " + emu.link () + " is offline"), std::string::npos)
      << s.error;
  EXPECT_NE (d.request ("GET", "/healthz", "", "").body.find ("\"lab\":\"offline\""), std::string::npos);
  EXPECT_EQ (d.request ("GET", "/api/v1/sessions/" + session).status, 200) << "the session stays";
  int before = player.frames ();
  EXPECT_TRUE (player.wait_frames (before + 10, 10)) << "the stream goes on while the stage is gone";
  emu.control ("connect");
  ASSERT_TRUE (eventually ([&] { return scope_of (d).online; }, 10)) << d.log ();
  EXPECT_EQ (scope_of (d).error, "");

  // The camera goes away: the viewers get the offline slate, then the camera
  // again.
  gv.unplug ();
  ASSERT_TRUE (eventually ([&] { return !scope_of (d).online; }, 10)) << d.log ();
  EXPECT_NE (scope_of (d).error.find ("camera aravis://127.0.0.1"), std::string::npos) << scope_of (d).error;
  before = player.frames ();
  EXPECT_TRUE (player.wait_frames (before + 10, 10)) << "no slate frames while the camera is gone";
  ASSERT_TRUE (gv.plug ());
  ASSERT_TRUE (eventually ([&] { return scope_of (d).online; }, 15)) << d.log ();
  before = player.frames ();
  EXPECT_TRUE (player.wait_frames (before + 10, 10));
  EXPECT_EQ (d.metric ("livemicro_worker_restarts_total{microscope=\"lab\"}"), 0)
      << "the devices reconnected inside the running worker";
  EXPECT_EQ (d.request ("GET", "/api/v1/sessions/" + session).status, 200);
}

TEST (LivemicrodHw, AMissingDeviceAtStartIsReportedAndRetried)
{
  gst_init (nullptr, nullptr);
  Daemon d (R"({"microscopes": [{"id": "lab", "camera": "aravis://Fake_1",
      "stage": "grbl:///dev/ttyLIVEMICRO-NOPE", "objectives": [{"magnification": 10, "um_per_px": 0.69}]}]})");
  ASSERT_TRUE (d.start (30, false)) << d.error ();
  ASSERT_TRUE (eventually ([&] { return !scope_of (d).error.empty (); }, 10)) << d.log ();
  Scope s = scope_of (d);
  EXPECT_FALSE (s.online);
  EXPECT_NE (s.error.find ("serial port '/dev/ttyLIVEMICRO-NOPE' does not exist"), std::string::npos)
      << s.error;
}
