// Third-party players and WHEP against a real livemicrod on 127.0.0.1:
// ffmpeg remuxes the RTSP stream into MP4 without timestamp warnings (also
// across a worker restart), ffprobe reads the SDP session name; a webrtcbin
// client plays through WHEP (POST /whep/{session}), and the daemon refuses
// what it must and gives back what a deleted peer held.
#include "cdp.h"
#include "daemon_process.h"
#include "program_run.h"
#include "webrtc_client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <sstream>
#include <thread>

using livemicro::test::Daemon;
using livemicro::test::have;
using livemicro::test::HttpReply;
using livemicro::test::ProgramRun;
using livemicro::test::run;
using livemicro::test::WebRtcClient;

namespace {

const char *kSmall = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 500},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

// Each test: a daemon with one microscope ("demo") and a session on it.
class Players : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
  // Starts the daemon and creates the session (`s`); use under
  // ASSERT_NO_FATAL_FAILURE.
  void serve (const char *user, const char *role)
  {
    ASSERT_TRUE (d.start ()) << d.error ();
    s = d.create_session (user, role);
    ASSERT_EQ (s.status, 201) << s.body;
  }
  Daemon d{kSmall};
  HttpReply s;
};

// What ffmpeg prints when the timestamps it is given are wrong.
const char *kTimestampWarnings[] = {"non monotonically increasing dts", "Non-monotonous DTS",
                                    "pts has no value", "Timestamps are unset", "non-strictly-monotonic"};

// rtsp://id:token@host:port/s/id (the token is base64url: safe in a URL).
std::string
rtsp_with_credentials (const HttpReply &s)
{
  std::string url = s.str ("rtsp_url");
  return "rtsp://" + s.str ("id") + ":" + s.str ("token") + "@" + url.substr (strlen ("rtsp://"));
}

// The timestamp warnings in ffmpeg's log, but for the first frame's: ffmpeg
// 5.1 (Debian 12) loses the pts of the first H.264 frame it reads from any
// RTSP server ("Timestamps are unset in a packet", then "Non-monotonous
// DTS ... previous: 0, current: 0" for the second frame), gst-rtsp-server's
// own test-launch pipelines included: its RTP timestamp is right (the
// RTP-Info rtptime of PLAY), the demuxer's packet has none.  Everything
// after that first frame must be clean.
std::string
timestamp_warnings (const std::string &ffmpeg_stderr)
{
  std::string found;
  size_t first_frame_unset = 0, first_frame_dts = 0;
  std::string line;
  // ffmpeg's progress lines end in \r, not \n: split on both.
  std::string text = ffmpeg_stderr;
  std::replace (text.begin (), text.end (), '\r', '\n');
  std::istringstream in (text);
  while (std::getline (in, line)) {
    if (line.find ("Timestamps are unset in a packet") != std::string::npos && first_frame_unset++ == 0)
      continue;
    if (line.find ("Non-monotonous DTS") != std::string::npos
        && line.find ("previous: 0, current: 0;") != std::string::npos && first_frame_dts++ == 0)
      continue;
    for (const char *w : kTimestampWarnings)
      if (line.find (w) != std::string::npos)
        found += (found.empty () ? "" : "\n") + line;
  }
  return found;
}

struct Probe {
  double duration_s = -1, fps = -1;
  long frames = -1;
  std::string json;
};

double
rational (const char *text)
{
  int n = 0, d = 0;
  if (!text || sscanf (text, "%d/%d", &n, &d) != 2 || d == 0)
    return -1;
  return (double)n / d;
}

Probe
probe_mp4 (const std::string &path)
{
  Probe p;
  ProgramRun r = run ({"ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
                       "format=duration:stream=avg_frame_rate,nb_read_packets", "-of", "json", path},
                      60);
  p.json = r.out + r.err;
  g_autoptr (JsonParser) parser = json_parser_new ();
  if (!json_parser_load_from_data (parser, r.out.c_str (), -1, nullptr))
    return p;
  JsonObject *root = json_node_get_object (json_parser_get_root (parser));
  if (JsonObject *format = json_object_get_object_member (root, "format"))
    p.duration_s
        = g_ascii_strtod (json_object_get_string_member_with_default (format, "duration", "-1"), nullptr);
  JsonArray *streams = json_object_get_array_member (root, "streams");
  if (streams && json_array_get_length (streams) > 0) {
    JsonObject *v = json_array_get_object_element (streams, 0);
    p.fps = rational (json_object_get_string_member_with_default (v, "avg_frame_rate", ""));
    p.frames = atol (json_object_get_string_member_with_default (v, "nb_read_packets", "-1"));
  }
  return p;
}

// ffmpeg -rtsp_transport tcp -i URL -c copy -t SECONDS out.mp4, as a user
// would record the stream.
ProgramRun
ffmpeg_record (const std::string &url, const std::string &out, int seconds)
{
  return run ({"ffmpeg", "-nostdin", "-hide_banner", "-y", "-rtsp_transport", "tcp", "-i", url, "-c", "copy",
               "-t", std::to_string (seconds), out},
              seconds + 60.0);
}

} // namespace

TEST_F (Players, FfmpegRecordsTheRtspStreamIntoMp4WithoutTimestampWarnings)
{
  if (!have ("ffmpeg") || !have ("ffprobe"))
    GTEST_SKIP () << "ffmpeg is not installed (scripts/install-deps.sh installs it)";
  ASSERT_NO_FATAL_FAILURE (serve ("carl", "consultant"));
  livemicro::test::TempDir dir;
  std::string out = dir.file ("out.mp4");
  ProgramRun r = ffmpeg_record (rtsp_with_credentials (s), out, 5);
  ASSERT_EQ (r.status, 0) << r.err;
  EXPECT_EQ (timestamp_warnings (r.err), "") << r.err;
  Probe p = probe_mp4 (out);
  EXPECT_GE (p.duration_s, 4.0) << p.json;
  EXPECT_LE (p.duration_s, 6.0) << p.json;
  // 30 fps from the capture clock; a loaded machine may drop some frames,
  // never make a rate out of RTP's 90 kHz clock.
  EXPECT_GE (p.fps, 10.0) << p.json;
  EXPECT_LE (p.fps, 31.0) << p.json;
  EXPECT_GE (p.frames, 50) << p.json;
}

TEST_F (Players, FfprobeShowsWhichMicroscopeAndViewTheStreamIs)
{
  if (!have ("ffprobe"))
    GTEST_SKIP () << "ffmpeg is not installed (scripts/install-deps.sh installs it)";
  ASSERT_NO_FATAL_FAILURE (serve ("carl", "consultant"));
  ProgramRun r
      = run ({"ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_entries", "format_tags=title", "-of",
              "default=noprint_wrappers=1:nokey=1", rtsp_with_credentials (s)},
             60);
  EXPECT_EQ (r.status, 0) << r.err;
  EXPECT_EQ (r.out, "LiveMicro demo \u2014 consultant view\n") << r.err;
}

TEST_F (Players, FfmpegRecordsAcrossAWorkerRestartWithoutTimestampWarnings)
{
  if (!have ("ffmpeg") || !have ("ffprobe"))
    GTEST_SKIP () << "ffmpeg is not installed (scripts/install-deps.sh installs it)";
  ASSERT_NO_FATAL_FAILURE (serve ("carl", "consultant"));
  HttpReply scope = d.request ("GET", "/api/v1/microscopes/demo");
  gint64 pid = json_object_get_int_member_with_default (scope.object (), "worker_pid", 0);
  ASSERT_GT (pid, 0);
  livemicro::test::TempDir dir;
  std::string out = dir.file ("restart.mp4");
  ProgramRun r;
  std::thread recorder ([&] { r = ffmpeg_record (rtsp_with_credentials (s), out, 7); });
  // Kill the worker once ffmpeg plays (the daemon counts it) and has
  // recorded for a while.
  const std::string players
      = "livemicro_viewers{microscope=\"demo\",profile=\"consultant\",transport=\"rtsp\"}";
  gint64 deadline = g_get_monotonic_time () + 30 * G_USEC_PER_SEC;
  while (g_get_monotonic_time () < deadline && d.metric (players) < 1)
    g_usleep (100000);
  g_usleep (2000000);
  EXPECT_EQ (kill ((pid_t)pid, SIGKILL), 0);
  recorder.join ();
  ASSERT_EQ (r.status, 0) << r.err;
  EXPECT_EQ (timestamp_warnings (r.err), "") << r.err;
  EXPECT_GE (d.metric ("livemicro_worker_restarts_total{microscope=\"demo\"}"), 1);
  Probe p = probe_mp4 (out);
  EXPECT_GE (p.duration_s, 6.0) << p.json;
  EXPECT_LE (p.duration_s, 8.0) << p.json;
  // The time the worker took to come back is a gap in the timestamps (the
  // capture clock's), not squeezed out: the longest step between frames.
  ProgramRun pts = run ({"ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                         "packet=pts_time", "-of", "csv=p=0", out},
                        60);
  double last = -1, longest = 0;
  std::istringstream times (pts.out);
  for (std::string t; std::getline (times, t);) {
    double v = g_ascii_strtod (t.c_str (), nullptr);
    if (last >= 0) {
      EXPECT_GT (v, last) << "timestamps increase";
      longest = std::max (longest, v - last);
    }
    last = v;
  }
  EXPECT_GE (longest, 0.2) << "the restart shows as a gap";
}

// ---- WHEP -------------------------------------------------------------------------

TEST_F (Players, WhepClientDecodesTheSessionsViewAndDeleteEndsIt)
{
  ASSERT_NO_FATAL_FAILURE (serve ("gina", "guest"));
  const std::string id = s.str ("id"), token = s.str ("token");
  const std::string viewers = "livemicro_viewers{microscope=\"demo\",profile=\"guest\",transport=\"webrtc\"}";
  {
    WebRtcClient c (WebRtcClient::Whep{}, d.http_port (), id, token);
    ASSERT_EQ (c.whep_status (), 201) << c.whep_answer () << "\n" << d.log ();
    EXPECT_EQ (c.whep_content_type (), "application/sdp");
    EXPECT_EQ (c.whep_location ().rfind ("/whep/" + id + "/", 0), 0u) << c.whep_location ();
    EXPECT_NE (c.whep_answer ().find ("a=candidate:"), std::string::npos) << "candidates in the answer";
    EXPECT_NE (c.whep_answer ().find ("a=end-of-candidates"), std::string::npos) << c.whep_answer ();
    EXPECT_NE (c.whep_answer ().find ("a=sendonly"), std::string::npos) << c.whep_answer ();
    ASSERT_TRUE (c.wait_frames (30, 40)) << c.frames () << " frames decoded, " << c.packets () << " packets\n"
                                         << d.log ();
    // The guest's own (masked) view: its branch, one WebRTC viewer on it.
    EXPECT_EQ (d.metric (viewers), 1);
    EXPECT_EQ (d.metric ("livemicro_encoders{microscope=\"demo\"}"), 1) << "no encode per viewer";
    // Someone else's token does not end it; its own does.
    HttpReply other = d.create_session ("olga", "owner");
    EXPECT_EQ (c.remove (other.str ("token")), 401);
    EXPECT_EQ (c.remove (), 204);
    EXPECT_EQ (c.remove (), 404) << "gone";
    EXPECT_EQ (d.metric (viewers), 0);
    // Nothing more arrives once the peer is gone.
    g_usleep (1000000);
    int after = c.packets ();
    g_usleep (1000000);
    EXPECT_LE (c.packets (), after + 2);
  }
}

TEST_F (Players, DeletingWhepPeersGivesBackTheirFdsAndThreads)
{
  ASSERT_NO_FATAL_FAILURE (serve ("carl", "consultant"));
  const std::string id = s.str ("id"), token = s.str ("token");
  auto cycle = [&] {
    WebRtcClient c (WebRtcClient::Whep{}, d.http_port (), id, token);
    EXPECT_EQ (c.whep_status (), 201) << c.whep_answer ();
    EXPECT_TRUE (c.wait_frames (10, 40)) << c.frames () << " frames";
    EXPECT_EQ (c.remove (), 204);
  };
  // The first peer starts what lasts (thread pools, the DTLS context).
  cycle ();
  auto settled = [&] (int fds, int threads) {
    livemicro::test::ProcessUsage u;
    gint64 deadline = g_get_monotonic_time () + 15 * G_USEC_PER_SEC;
    do {
      g_usleep (250000);
      u = livemicro::test::process_usage (d.pid ());
    } while (g_get_monotonic_time () < deadline && (u.fds > fds || u.threads > threads));
    return u;
  };
  livemicro::test::ProcessUsage before = settled (1 << 20, 1 << 20);
  before = settled (before.fds, before.threads);
  for (int i = 0; i < 3; i++)
    cycle ();
  livemicro::test::ProcessUsage after = settled (before.fds, before.threads);
  EXPECT_LE (after.fds, before.fds) << "fds " << before.fds << " → " << after.fds;
  EXPECT_LE (after.threads, before.threads) << "threads " << before.threads << " → " << after.threads;
  EXPECT_EQ (d.metric ("livemicro_viewers{microscope=\"demo\",profile=\"consultant\",transport=\"webrtc\"}"),
             0);
}

TEST_F (Players, WhepRefusesBadTokensBadOffersAndOtherMethods)
{
  ASSERT_NO_FATAL_FAILURE (serve ("carl", "consultant"));
  HttpReply other = d.create_session ("olga", "owner");
  ASSERT_EQ (other.status, 201);
  const std::string id = s.str ("id"), token = s.str ("token"), path = "/whep/" + id;
  const std::string sdp = "application/sdp";
  // A well-formed offer from a real client, for the token cases.
  const std::string good
      = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n"
        "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 "
        "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:"
        "CC:DD:EE:FF\r\na=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n"
        "a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";
  struct Case {
    const char *method;
    std::string path, body, token, type;
    int status;
  };
  std::vector<Case> cases = {
      {"POST", path, good, "", sdp, 401},
      {"POST", path, good, "wrong", sdp, 401},
      {"POST", path, good, other.str ("token"), sdp, 401},
      {"POST", path, good, Daemon::kAdminToken, sdp, 401},
      {"POST", "/whep/0123456789abcdef0123456789abcdef", good, token, sdp, 401},
      {"POST", path, "", token, sdp, 400},
      {"POST", path, "this is not SDP", token, sdp, 400},
      {"POST", path, "v=0\r\nnonsense\r\n", token, sdp, 400},
      {"POST", path, "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", token, sdp, 400},
      {"POST", path, good.substr (0, good.find ("a=ice-ufrag")), token, sdp, 400},
      {"POST", path, good, token, "application/json", 415},
      {"POST", path, std::string (200 * 1024, 'v'), token, sdp, 413},
      {"POST", path,
       "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\na=fingerprint:sha-256 00\r\n"
       "a=recvonly\r\na=rtpmap:96 VP8/90000\r\n",
       token, sdp, 422},
      {"GET", path, "", token, sdp, 405},
      {"PUT", path, good, token, sdp, 405},
      {"PATCH", path + "/0123456789abcdef0123456789abcdef", "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
       token, "application/trickle-ice-sdpfrag", 405},
      {"DELETE", path + "/0123456789abcdef0123456789abcdef", "", token, sdp, 404},
  };
  for (const Case &c : cases) {
    HttpReply r = d.request (c.method, c.path, c.body, c.token, c.type);
    EXPECT_EQ (r.status, c.status) << c.method << " " << c.path << " " << c.body.substr (0, 40) << " → "
                                   << r.body;
    EXPECT_TRUE (r.location.empty ()) << "nothing created: " << r.location;
  }
  EXPECT_EQ (d.metric ("livemicro_viewers{microscope=\"demo\",profile=\"consultant\",transport=\"webrtc\"}"),
             0);
}

TEST_F (Players, EndingTheSessionEndsItsWhepPeers)
{
  ASSERT_NO_FATAL_FAILURE (serve ("carl", "consultant"));
  WebRtcClient c (WebRtcClient::Whep{}, d.http_port (), s.str ("id"), s.str ("token"));
  ASSERT_EQ (c.whep_status (), 201) << c.whep_answer ();
  ASSERT_TRUE (c.wait_frames (10, 40)) << c.frames () << " frames";
  EXPECT_EQ (d.request ("DELETE", "/api/v1/sessions/" + s.str ("id")).status, 204);
  g_usleep (1000000);
  int after = c.packets ();
  g_usleep (1000000);
  EXPECT_LE (c.packets (), after + 2) << "the peer went with its session";
  EXPECT_EQ (c.remove (), 401) << "the session's token died with it";
}

TEST_F (Players, TheViewerPagePlaysThroughWhepInChromium)
{
  if (!livemicro::test::ChromiumPage::available ())
    GTEST_SKIP () << "Debian's chromium is not installed (scripts/install-deps.sh installs it)";
  ASSERT_NO_FATAL_FAILURE (serve ("carl", "consultant"));
  std::string url = s.str ("viewer_url");
  url.insert (url.find ('#'), "?whep=1");
  const std::string viewers
      = "livemicro_viewers{microscope=\"demo\",profile=\"consultant\",transport=\"webrtc\"}";
  // ICE can fail on a first try on a loaded machine: the page starts over
  // by itself (a new WHEP resource, the old one deleted).
  livemicro::test::ChromiumPage page (url);
  ASSERT_TRUE (page.connected ());
  bool played = page.wait_true ("window.livemicro && window.livemicro.framesDecoded >= 30", 60);
  std::string state = page.evaluate (
      "({whep: livemicro.whep, resource: livemicro.whepResource, decoded: livemicro.framesDecoded, "
      "ice: livemicro.iceState, notice: livemicro.lastNotice, conn: "
      "document.getElementById('conn').textContent})");
  ASSERT_TRUE (played) << state << "\n" << d.log ();
  EXPECT_NE (state.find ("\"whep\":true"), std::string::npos) << state;
  EXPECT_NE (state.find ("\"resource\":\"/whep/" + s.str ("id") + "/"), std::string::npos) << state;
  EXPECT_EQ (d.metric (viewers), 1) << "one WebRTC peer: the WHEP one (the socket asked for none)";
  EXPECT_EQ (d.metric ("livemicro_encoders{microscope=\"demo\"}"), 1) << "no encode per viewer";
  // The page's own DELETE (as on leaving it) ends the peer.
  page.evaluate ("fetch(livemicro.whepResource, {method: 'DELETE', headers: {Authorization: 'Bearer ' + "
                 "new URLSearchParams(location.hash.slice(1)).get('token')}}).then(r => r.status)");
  EXPECT_EQ (d.metric (viewers), 0);
}
