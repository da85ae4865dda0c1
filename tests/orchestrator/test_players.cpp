// Third-party players and WHEP against a real livemicrod on 127.0.0.1:
// ffmpeg remuxes the RTSP stream into MP4 without timestamp warnings (also
// across a worker restart), ffprobe reads the SDP session name; a webrtcbin
// client plays through WHEP (POST /whep/{session}), and the daemon refuses
// what it must and gives back what a deleted peer held.
#include "../bench/rtsp_load_client.h"
#include "cdp.h"
#include "daemon_process.h"
#include "program_run.h"
#include "webrtc_client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
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

namespace {

// A request with the headers a browser sends; the reply's status and the
// response headers asked for.
struct CorsReply {
  int status = 0;
  std::map<std::string, std::string> headers;
};

CorsReply
cors_request (const Daemon &d, const char *method, const std::string &path,
              const std::vector<std::pair<std::string, std::string>> &headers, const std::string &body = "",
              const char *type = "application/sdp")
{
  CorsReply r;
  g_autoptr (SoupSession) session = soup_session_new ();
  std::string url = "http://127.0.0.1:" + std::to_string (d.http_port ()) + path;
  g_autoptr (SoupMessage) msg = soup_message_new (method, url.c_str ());
  for (const auto &[name, value] : headers)
    soup_message_headers_replace (soup_message_get_request_headers (msg), name.c_str (), value.c_str ());
  if (!body.empty ()) {
    g_autoptr (GBytes) b = g_bytes_new (body.data (), body.size ());
    soup_message_set_request_body_from_bytes (msg, type, b);
  }
  g_autoptr (GBytes) out = soup_session_send_and_read (session, msg, nullptr, nullptr);
  r.status = (int)soup_message_get_status (msg);
  for (const char *name : {"Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                           "Access-Control-Allow-Headers", "Access-Control-Expose-Headers", "Allow", "Vary"})
    if (const char *v = soup_message_headers_get_list (soup_message_get_response_headers (msg), name))
      r.headers[name] = v;
  return r;
}

const char *kPlayerOrigin = "https://player.example:8443";

std::vector<std::pair<std::string, std::string>>
preflight (const std::string &origin, const char *method)
{
  return {{"Origin", origin},
          {"Access-Control-Request-Method", method},
          {"Access-Control-Request-Headers", "authorization,content-type"}};
}

} // namespace

// A WHEP player on an allowed origin gets its preflights answered and the
// CORS headers on every answer (errors included, so it can read them);
// another origin, or any origin without configuration, gets none.
TEST_F (Players, WhepAnswersCorsPreflightsForAllowedOriginsOnly)
{
  Daemon cors (std::string (R"({"cors": {"allowed_origins": [")") + kPlayerOrigin + R"("]},)"
               + std::string (kSmall).substr (1));
  ASSERT_TRUE (cors.start ()) << cors.error ();
  HttpReply session = cors.create_session ("carl", "consultant");
  ASSERT_EQ (session.status, 201) << session.body;
  const std::string path = "/whep/" + session.str ("id");

  CorsReply p = cors_request (cors, "OPTIONS", path, preflight (kPlayerOrigin, "POST"));
  EXPECT_EQ (p.status, 204);
  EXPECT_EQ (p.headers["Access-Control-Allow-Origin"], kPlayerOrigin);
  EXPECT_NE (p.headers["Access-Control-Allow-Methods"].find ("POST"), std::string::npos);
  EXPECT_NE (p.headers["Access-Control-Allow-Headers"].find ("Authorization"), std::string::npos);
  EXPECT_NE (p.headers["Access-Control-Allow-Headers"].find ("Content-Type"), std::string::npos);
  EXPECT_NE (p.headers["Vary"].find ("Origin"), std::string::npos);
  CorsReply del
      = cors_request (cors, "OPTIONS", path + "/0123456789abcdef", preflight (kPlayerOrigin, "DELETE"));
  EXPECT_EQ (del.status, 204);
  EXPECT_NE (del.headers["Access-Control-Allow-Methods"].find ("DELETE"), std::string::npos);
  // The answer itself (here a refusal: no token) is readable from that origin.
  CorsReply post = cors_request (cors, "POST", path, {{"Origin", kPlayerOrigin}}, "v=0\r\n");
  EXPECT_EQ (post.status, 401);
  EXPECT_EQ (post.headers["Access-Control-Allow-Origin"], kPlayerOrigin);
  EXPECT_NE (post.headers["Access-Control-Expose-Headers"].find ("Location"), std::string::npos);
  // Another origin: refused, no CORS header.
  for (const char *origin : {"https://evil.example", "null", "https://player.example"}) {
    CorsReply other = cors_request (cors, "OPTIONS", path, preflight (origin, "POST"));
    EXPECT_EQ (other.status, 403) << origin;
    EXPECT_EQ (other.headers.count ("Access-Control-Allow-Origin"), 0u) << origin;
    CorsReply answer = cors_request (cors, "POST", path, {{"Origin", origin}}, "v=0\r\n");
    EXPECT_EQ (answer.headers.count ("Access-Control-Allow-Origin"), 0u) << origin;
  }
  // Without an Origin (not a browser): the methods, nothing else.
  CorsReply plain = cors_request (cors, "OPTIONS", path, {});
  EXPECT_EQ (plain.status, 204);
  EXPECT_EQ (plain.headers["Allow"], "POST, OPTIONS");
  EXPECT_EQ (plain.headers.count ("Access-Control-Allow-Origin"), 0u);
  // The default configuration allows no other origin.
  ASSERT_NO_FATAL_FAILURE (serve ("carl", "consultant"));
  CorsReply none = cors_request (d, "OPTIONS", "/whep/" + s.str ("id"), preflight (kPlayerOrigin, "POST"));
  EXPECT_EQ (none.status, 403);
  EXPECT_EQ (none.headers.count ("Access-Control-Allow-Origin"), 0u);
}

// A real browser preflight: a page on http://127.0.0.1:PORT plays through
// WHEP on http://localhost:PORT (another origin), with its Authorization
// header, and reads the Location of the new resource.
TEST_F (Players, ABrowserOnAnotherOriginPlaysThroughWhepWhenItsOriginIsAllowed)
{
  if (!livemicro::test::ChromiumPage::available ())
    GTEST_SKIP () << "Debian's chromium is not installed (scripts/install-deps.sh installs it)";
  Daemon cors (R"({"cors": {"allowed_origins": ["*"]},)" + std::string (kSmall).substr (1));
  ASSERT_TRUE (cors.start ()) << cors.error ();
  HttpReply session = cors.create_session ("carl", "consultant");
  ASSERT_EQ (session.status, 201) << session.body;
  const std::string port = std::to_string (cors.http_port ());
  livemicro::test::ChromiumPage page ("http://127.0.0.1:" + port + "/healthz");
  ASSERT_TRUE (page.connected ());
  ASSERT_TRUE (page.wait_true ("location.pathname === '/healthz' && document.readyState === 'complete'", 10));
  const std::string script
      = "(async () => { try {"
        "  const pc = new RTCPeerConnection ({iceServers: []});"
        "  pc.addTransceiver ('video', {direction: 'recvonly'});"
        "  await pc.setLocalDescription (await pc.createOffer ());"
        "  const url = 'http://localhost:"
        + port + "/whep/" + session.str ("id")
        + "';"
          "    const r = await fetch (url, {method: 'POST', body: pc.localDescription.sdp, headers: {"
          "      'Authorization': 'Bearer "
        + session.str ("token")
        + "', 'Content-Type': 'application/sdp'}});"
          "    const location = r.headers.get ('Location');"
          "    const gone = location ? (await fetch ('http://localhost:"
        + port + "' + location, {method: 'DELETE', headers: {'Authorization': 'Bearer "
        + session.str ("token")
        + "'}})).status : 0;"
          "    pc.close ();"
          "    return {status: r.status, location, gone};"
          "  } catch (e) { return {error: String (e)}; }"
          "}) ()";
  std::string result = page.evaluate (script, 30);
  if (result.empty ()) // the page's context went away under the call (a late navigation): once more
    result = page.evaluate (script, 30);
  EXPECT_NE (result.find ("\"status\":201"), std::string::npos) << result << "\n" << cors.log ();
  EXPECT_NE (result.find ("\"location\":\"/whep/" + session.str ("id") + "/"), std::string::npos) << result;
  EXPECT_NE (result.find ("\"gone\":204"), std::string::npos) << result;
}

// bench-viewers' load generator (tests/bench/rtsp_load_client.h) answers
// the daemon's Digest challenge, plays the session's view over TCP and
// counts the frames a real player (rtspsrc, depayloaded and parsed into
// access units) gets over the same seconds; a wrong token is refused.
TEST_F (Players, TheBenchmarksLoadGeneratorCountsTheFramesAPlayerGets)
{
  ASSERT_NO_FATAL_FAILURE (serve ("alice", "owner"));
  std::string desc = "rtspsrc latency=0 protocols=tcp location=\"" + s.str ("rtsp_url") + "\" user-id=\""
                     + s.str ("id") + "\" user-pw=\"" + s.str ("token")
                     + "\" ! rtph264depay ! h264parse ! video/x-h264,alignment=au ! fakesink name=sink "
                       "sync=false async=false";
  GstElement *player = gst_parse_launch (desc.c_str (), nullptr);
  ASSERT_NE (player, nullptr);
  std::atomic<int> player_frames{0};
  GstElement *sink = gst_bin_get_by_name (GST_BIN (player), "sink");
  GstPad *pad = gst_element_get_static_pad (sink, "sink");
  gst_pad_add_probe (
      pad, GST_PAD_PROBE_TYPE_BUFFER,
      [] (GstPad *, GstPadProbeInfo *, gpointer n) {
        (*static_cast<std::atomic<int> *> (n))++;
        return GST_PAD_PROBE_OK;
      },
      &player_frames, nullptr);
  gst_object_unref (pad);
  gst_object_unref (sink);
  gst_element_set_state (player, GST_STATE_PLAYING);

  livemicro::bench::RtspLoadClients load;
  std::string error;
  EXPECT_EQ (load.add (s.str ("rtsp_url"), s.str ("id"), "not-the-token", error), -1);
  EXPECT_NE (error.find ("status 401"), std::string::npos) << error;
  int viewer = load.add (s.str ("rtsp_url"), s.str ("id"), s.str ("token"), error);
  ASSERT_GE (viewer, 0) << error;

  g_usleep (2 * G_USEC_PER_SEC);
  int load0 = load.frames (viewer), player0 = player_frames;
  g_usleep (4 * G_USEC_PER_SEC);
  int by_load = load.frames (viewer) - load0, by_player = player_frames - player0;
  gst_element_set_state (player, GST_STATE_NULL);
  gst_object_unref (player);

  EXPECT_GT (by_player, 30) << "the player got too few frames to compare";
  EXPECT_NEAR (by_load, by_player, 3 + by_player / 10);
  EXPECT_EQ (load.garbage_bytes (), 0);
}
