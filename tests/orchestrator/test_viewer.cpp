// The viewer page per role, in a real headless Chromium driven over the
// DevTools protocol against a real livemicrod: what each role is offered,
// that nothing the page asks for on load is refused (every HTTP response
// watched), a bad link, the region tool, the analysis panel and scale bar.
#include "cdp.h"
#include "daemon_process.h"
#include "sim/synthetic_slide.h"

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include <cmath>
#include <string>

using livemicro::test::ChromiumPage;
using livemicro::test::Daemon;
using livemicro::test::HttpReply;

namespace {

const char *kConfig = R"({
  "video": {"width": 320, "height": 240, "framerate": 30, "bitrate_kbps": 400},
  "control": {"idle_timeout_ms": 30000, "max_commands_per_s": 20},
  "microscopes": [{"id": "demo", "uri": "sim://synthetic"}]})";

class Viewer : public ::testing::Test {
protected:
  static void SetUpTestSuite () { gst_init (nullptr, nullptr); }
  void SetUp () override
  {
    if (!ChromiumPage::available ())
      GTEST_SKIP () << "Debian's chromium is not installed (scripts/install-deps.sh installs it)";
  }
  // Whether the element with this id is shown (not display:none, itself
  // or by an ancestor).
  static bool shown (ChromiumPage &page, const std::string &selector)
  {
    return page.evaluate ("(() => { const e = document.querySelector('" + selector
                          + "'); return !!e && e.getClientRects().length > 0; })()")
           == "true";
  }
  // The responses of status 400 or more, as "STATUS URL" lines.
  static std::string refused (ChromiumPage &page)
  {
    std::string out;
    for (const auto &r : page.responses ())
      if (r.status >= 400)
        out += std::to_string (r.status) + " " + r.url + "\n";
    return out;
  }
  // Opens the page of a new session of `role`, watching its responses from
  // the first request, and waits for its video.
  static std::unique_ptr<ChromiumPage> open (Daemon &d, const std::string &user, const std::string &role,
                                             HttpReply *session = nullptr)
  {
    HttpReply s = d.create_session (user, role);
    EXPECT_EQ (s.status, 201) << s.body;
    auto page = std::make_unique<ChromiumPage> (s.str ("viewer_url"));
    EXPECT_TRUE (page->connected ()) << "no DevTools connection to Chromium";
    page->watch_network_and_reload ();
    EXPECT_TRUE (page->wait_true ("window.livemicro && window.livemicro.framesDecoded > 5", 40))
        << role << ": the page shows video";
    if (session)
      *session = std::move (s);
    return page;
  }
};

TEST_F (Viewer, EachRoleIsOfferedWhatItMayUseAndNothingIsRefusedOnLoad)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  struct Expect {
    const char *role;
    bool drive, stop, annotate, pointer, analysis;
  };
  for (const Expect &e :
       {Expect{"guest", false, false, false, true, false}, Expect{"consultant", true, true, true, true, true},
        Expect{"owner", true, true, true, true, true}}) {
    SCOPED_TRACE (e.role);
    auto page = open (d, std::string ("u-") + e.role, e.role);
    g_usleep (2000000); // what the page asks for after the video started
    EXPECT_EQ (shown (*page, "#request"), e.drive);
    EXPECT_EQ (shown (*page, "#focus-up"), e.drive);
    EXPECT_EQ (shown (*page, "#autofocus"), e.drive);
    EXPECT_EQ (shown (*page, "input[value=move]"), e.drive);
    EXPECT_EQ (shown (*page, "#stop"), e.stop);
    EXPECT_EQ (shown (*page, "input[value=arrow]"), e.annotate);
    EXPECT_EQ (shown (*page, "input[value=region]"), e.annotate);
    EXPECT_EQ (shown (*page, "input[value=pointer]"), e.pointer);
    EXPECT_EQ (shown (*page, "#analysis-panel"), e.analysis);
    // Keys a guest may press fire nothing either.
    page->evaluate ("document.getElementById('stage').focus()");
    page->key ("rawKeyDown", "ArrowRight", 39);
    page->key ("keyUp", "ArrowRight", 39);
    page->key ("rawKeyDown", "Escape", 27);
    page->key ("keyUp", "Escape", 27);
    g_usleep (500000);
    auto responses = page->responses ();
    EXPECT_GE (responses.size (), 3u) << "the watcher saw the page, its script and its style";
    EXPECT_EQ (refused (*page), "") << "requests the page made that were refused";
    if (!e.drive) { // a key that would move says why nothing happens
      EXPECT_NE (page->evaluate ("document.getElementById('notice').textContent").find ("cannot drive"),
                 std::string::npos)
          << page->evaluate ("document.getElementById('notice').textContent");
    }
  }
}

TEST_F (Viewer, ABadTokenShowsOneClearMessageAndDisablesEverything)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply s = d.create_session ("gina", "guest");
  ASSERT_EQ (s.status, 201);
  std::string url = s.str ("viewer_url");
  url = url.substr (0, url.find ("#token=")) + "#token=not-the-token";
  {
    ChromiumPage page (url);
    EXPECT_TRUE (page.connected ());
    page.watch_network_and_reload ();
    EXPECT_TRUE (page.wait_true ("!document.getElementById('fatal').classList.contains('hidden')", 20));
    std::string message = page.evaluate ("document.getElementById('fatal').textContent");
    EXPECT_NE (message.find ("not valid"), std::string::npos) << message;
    EXPECT_EQ (page.evaluate ("[...document.querySelectorAll('button, input')].every((e) => e.disabled)"),
               "true");
    EXPECT_EQ (page.evaluate ("document.querySelectorAll('.fatal:not(.hidden)').length"), "1");
    g_usleep (1500000);
    EXPECT_EQ (refused (page), "");
  } // Chromium goes away: its sockets close
  g_usleep (1000000);
  EXPECT_EQ (d.log ().find ("CRITICAL"), std::string::npos) << d.log ();
}

TEST_F (Viewer, RegionToolShowsHintsAndTheDoubleClickAddsNoCorner)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply s;
  auto page = open (d, "olga", "owner", &s);
  page->evaluate ("window.prompt = () => 'tumour'; const r = document.querySelector('input[value=region]'); "
                  "r.checked = true; r.dispatchEvent(new Event('change'))");
  EXPECT_NE (page->evaluate ("document.getElementById('hint').textContent").find ("first corner"),
             std::string::npos);
  std::string box
      = page->evaluate ("(() => { const r = document.getElementById('stage').getBoundingClientRect(); "
                        "return [r.left, r.top, r.width, r.height].join(','); })()");
  double l = 0, t = 0, w = 0, h = 0;
  ASSERT_EQ (sscanf (g_strstrip (g_strdelimit (&box[0], "\"", ' ')), "%lf,%lf,%lf,%lf", &l, &t, &w, &h), 4)
      << box;
  const double cx = l + w / 2, cy = t + h / 2;
  page->click (cx - 60, cy - 40);
  page->click (cx + 60, cy - 40);
  page->click (cx + 60, cy + 40);
  EXPECT_NE (page->evaluate ("document.getElementById('hint').textContent").find ("double-click"),
             std::string::npos);
  page->click (cx - 60, cy + 40, 1);
  page->click (cx - 60, cy + 40, 2); // the second click of the double-click
  ASSERT_TRUE (page->wait_true ("document.getElementById('notice').textContent.includes('region saved')", 10))
      << page->evaluate ("document.getElementById('notice').textContent");
  HttpReply a = d.request ("GET", "/api/v1/microscopes/demo/annotations", "", s.str ("token"));
  ASSERT_EQ (a.status, 200);
  JsonArray *list = json_object_get_array_member (a.object (), "annotations");
  ASSERT_EQ (json_array_get_length (list), 1u);
  JsonArray *pts = json_object_get_array_member (json_array_get_object_element (list, 0), "points_um");
  EXPECT_EQ (json_array_get_length (pts), 4u) << "four corners, none twice";
}

TEST_F (Viewer, AnalysisPanelLeadsWithTheFiguresThatMatterScaleBarAndUpdatingAfterAMove)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply s;
  auto page = open (d, "olga", "owner", &s);
  ASSERT_TRUE (page->wait_true ("window.livemicro.features && window.livemicro.features.analysed", 30));
  // The lead: these five, in this order, each with a tooltip.
  EXPECT_EQ (page->evaluate (
                 "[...document.querySelectorAll('#analysis-lead dt')].map((e) => e.textContent).join('|')"),
             "\"nuclei|density|pleomorphism|grade cue|quality\"");
  EXPECT_EQ (
      page->evaluate ("[...document.querySelectorAll('#analysis-lead dt, #analysis-lead dd')].every((e) => "
                      "e.title.length > 10)"),
      "true");
  std::string density
      = page->evaluate ("document.querySelector('#analysis-lead dd[data-key=nuclei_per_mm2]').textContent");
  EXPECT_NE (density.find ("/mm²"), std::string::npos) << density;
  EXPECT_NE (page->evaluate ("document.getElementById('grade-note').textContent").find ("not a diagnosis"),
             std::string::npos);
  EXPECT_EQ (page->evaluate ("document.getElementById('analysis-more').open"), "false")
      << "the rest folds away";
  // The scale bar: 1, 2 or 5 × 10ⁿ µm, drawn as long as that many µm are on screen.
  ASSERT_TRUE (page->wait_true ("window.livemicro.scaleBar", 5));
  double um = std::stod (page->evaluate ("window.livemicro.scaleBar.um"));
  double px = std::stod (page->evaluate ("window.livemicro.scaleBar.px"));
  double upp = std::stod (page->evaluate ("window.livemicro.scope.um_per_px"));
  double scale
      = std::stod (page->evaluate ("(() => { const v = document.getElementById('video'); const r = "
                                   "document.getElementById('stage').getBoundingClientRect(); return "
                                   "Math.min(r.width / v.videoWidth, r.height / v.videoHeight); })()"));
  EXPECT_NEAR (px, um / upp * scale, 0.5);
  double mantissa = um / std::pow (10, std::floor (std::log10 (um)));
  EXPECT_TRUE (std::abs (mantissa - 1) < 1e-9 || std::abs (mantissa - 2) < 1e-9
               || std::abs (mantissa - 5) < 1e-9)
      << um;
  ASSERT_TRUE (page->wait_true ("document.getElementById('analysis-state').textContent === 'current'", 20));
  // The stage moves: the panel says "updating" until a result of the new field.
  HttpReply c
      = d.request ("POST", "/api/v1/microscopes/demo/control", R"({"action": "request"})", s.str ("token"));
  ASSERT_EQ (c.status, 200) << c.body;
  HttpReply m = d.request ("POST", "/api/v1/microscopes/demo/commands",
                           "{\"lease\":\"" + c.str ("lease") + "\",\"move_by\":{\"dx_um\":3000,\"dy_um\":0}}",
                           s.str ("token"));
  ASSERT_EQ (m.status, 202) << m.body;
  EXPECT_TRUE (page->wait_true ("document.getElementById('analysis-state').textContent === 'updating'", 5));
}

// The nuclei event: outlines and centroids in slide µm, where the slide
// has them (the synthetic slide's ground truth), drawn by the page as
// layers each viewer switches; not sent to a profile without analysis.
TEST_F (Viewer, NucleiInSlideMicronsDrawnAsLayersOnlyForProfilesWithAnalysis)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  auto page = open (d, "carl", "consultant");
  ASSERT_TRUE (page->wait_true ("window.livemicro.nuclei && window.livemicro.nuclei.nuclei.length > 20", 30));
  std::string text = page->evaluate ("window.livemicro.nuclei");
  g_autoptr (JsonParser) p = json_parser_new ();
  ASSERT_TRUE (json_parser_load_from_data (p, text.c_str (), -1, nullptr)) << text.substr (0, 200);
  JsonObject *field = json_node_get_object (json_parser_get_root (p));
  const double fx = json_object_get_double_member (field, "x_um"),
               fy = json_object_get_double_member (field, "y_um");
  const double fw = json_object_get_double_member (field, "width_um"),
               fh = json_object_get_double_member (field, "height_um");
  livemicro::hw::sim::SyntheticSlide slide;
  auto truth = slide.nuclei_in (cv::Rect2d (fx - fw / 2 - 20, fy - fh / 2 - 20, fw + 40, fh + 40));
  ASSERT_FALSE (truth.empty ());
  JsonArray *nuclei = json_object_get_array_member (field, "nuclei");
  size_t near = 0, n = json_array_get_length (nuclei), outlined = 0;
  for (guint i = 0; i < n; i++) {
    JsonObject *c = json_array_get_object_element (nuclei, i);
    double x = json_object_get_double_member (c, "x_um"), y = json_object_get_double_member (c, "y_um");
    EXPECT_LE (std::abs (x - fx), fw / 2 + 1);
    EXPECT_LE (std::abs (y - fy), fh / 2 + 1);
    double best = 1e9;
    for (const auto &t : truth)
      best = std::min (best, std::hypot (t.x_um - x, t.y_um - y));
    near += best <= 3.0;
    JsonArray *o = json_object_get_array_member (c, "outline_um");
    if (json_array_get_length (o) >= 6) {
      outlined++;
      // The outline goes round its centroid, within a nucleus' size.
      for (guint k = 0; k + 1 < json_array_get_length (o); k += 2)
        EXPECT_LT (std::hypot (json_array_get_double_element (o, k) - x,
                               json_array_get_double_element (o, k + 1) - y),
                   25.0);
    }
  }
  EXPECT_GE (near, n * 8 / 10) << near << " of " << n << " within 3 µm of a true nucleus";
  EXPECT_GE (outlined, n * 9 / 10);
  // Layers: outlines on by default, heat map on request, both off.
  EXPECT_TRUE (page->wait_true ("window.livemicro.layersDrawn > 20", 10));
  page->evaluate (
      "document.getElementById('layer-outlines').click(); document.getElementById('layer-heatmap').click()");
  EXPECT_TRUE (page->wait_true ("window.livemicro.layers.heatmap && !window.livemicro.layers.outlines && "
                                "window.livemicro.layersDrawn > 0",
                                5));
  page->evaluate ("document.getElementById('layer-heatmap').click()");
  EXPECT_TRUE (page->wait_true ("window.livemicro.layersDrawn === 0", 5));
  // A guest's profile draws no analysis: no nuclei reach its page.
  page.reset ();
  auto guest = open (d, "gina", "guest");
  g_usleep (3000000);
  EXPECT_EQ (guest->evaluate ("window.livemicro.nuclei"), "null");
  EXPECT_FALSE (shown (*guest, "#layer-outlines"));
}

// Where the microscope is now, from the API.
cv::Point2d
stage_at (Daemon &d, bool *moving = nullptr)
{
  HttpReply m = d.request ("GET", "/api/v1/microscopes/demo");
  JsonObject *st = json_object_get_object_member (m.object (), "stage");
  if (moving)
    *moving = json_object_get_boolean_member (m.object (), "moving");
  return {json_object_get_double_member (st, "x_um"), json_object_get_double_member (st, "y_um")};
}

// The slide map: the whole slide (the virtual microscope's macro image),
// the field drawn where the stage is, the path; a click moves the stage
// for the driver only.
TEST_F (Viewer, SlideMapShowsTheFieldWhereTheStageWentAndAClickMovesItForTheDriverOnly)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  auto page = open (d, "carl", "consultant");
  ASSERT_TRUE (page->wait_true (
      "window.livemicro.map && window.livemicro.mapView && window.livemicro.mapView.field", 20));
  // The macro image comes a few seconds after the first frames (rendered at low priority).
  EXPECT_TRUE (page->wait_true ("window.livemicro.map.macro", 40));
  EXPECT_NEAR (std::stod (page->evaluate ("window.livemicro.map.width_um")), 75000, 200);
  std::string box
      = page->evaluate ("(() => { const r = document.getElementById('map').getBoundingClientRect(); "
                        "return [r.left, r.top].join(','); })()");
  double left = 0, top = 0;
  ASSERT_EQ (sscanf (g_strstrip (g_strdelimit (&box[0], "\"", ' ')), "%lf,%lf", &left, &top), 2) << box;
  const double x0 = std::stod (page->evaluate ("window.livemicro.map.x_um")),
               y0 = std::stod (page->evaluate ("window.livemicro.map.y_um"));
  const double um_per_px = std::stod (page->evaluate ("window.livemicro.mapView.um_per_css_px"));
  auto click_at = [&] (double x_um, double y_um) {
    page->click (left + (x_um - x0) / um_per_px, top + (y_um - y0) / um_per_px);
  };
  // Not driving: a click on the map moves nothing and sends nothing.
  const cv::Point2d before = stage_at (d);
  const cv::Point2d target (45000, 14000);
  click_at (target.x, target.y);
  g_usleep (1500000);
  EXPECT_LT (cv::norm (stage_at (d) - before), 1.0);
  EXPECT_EQ (refused (*page), "");
  EXPECT_NE (page->evaluate ("document.getElementById('notice').textContent").find ("request control"),
             std::string::npos);
  // Driving: the stage goes where the map was clicked (within a map pixel).
  page->evaluate ("document.getElementById('request').click()");
  ASSERT_TRUE (page->wait_true ("window.livemicro.lease", 10));
  click_at (target.x, target.y);
  bool arrived = false;
  for (int i = 0; i < 300 && !arrived; i++, g_usleep (100000)) {
    bool moving = true;
    cv::Point2d at = stage_at (d, &moving);
    arrived = !moving && cv::norm (at - target) <= 2 * um_per_px;
  }
  ASSERT_TRUE (arrived) << "stage at " << stage_at (d) << ", clicked " << target;
  // The map draws the field there and the path ends there.
  const cv::Point2d at = stage_at (d);
  EXPECT_TRUE (page->wait_true ("(() => { const v = window.livemicro.mapView, m = window.livemicro.map; "
                                "return Math.hypot(v.field.x - ("
                                    + std::to_string (at.x) + " - m.x_um) / v.um_per_css_px, v.field.y - ("
                                    + std::to_string (at.y) + " - m.y_um) / v.um_per_css_px) < 3; })()",
                                5));
  EXPECT_TRUE (page->wait_true ("(() => { const p = window.livemicro.map.path_um, e = p[p.length - 1]; "
                                "return Math.hypot(e[0] - "
                                    + std::to_string (at.x) + ", e[1] - " + std::to_string (at.y)
                                    + ") <= 25; })()",
                                5))
      << page->evaluate ("JSON.stringify(window.livemicro.map.path_um.slice(-3))");
  HttpReply json = d.request ("GET", "/api/v1/microscopes/demo/overview");
  ASSERT_EQ (json.status, 200) << json.body;
  JsonArray *path = json_object_get_array_member (json.object (), "path_um");
  ASSERT_GE (json_array_get_length (path), 2u) << "the path driven, kept by the daemon";
  EXPECT_EQ (refused (*page), "");
}

// A guest's map: the label area masked on the server (no label pixel is
// sent), and coarse; the owner's map shows the label.
TEST_F (Viewer, GuestsSlideMapIsMaskedOverTheLabelOnTheServer)
{
  Daemon d (kConfig);
  ASSERT_TRUE (d.start ()) << d.error ();
  HttpReply g;
  auto page = open (d, "gina", "guest", &g);
  ASSERT_TRUE (page->wait_true ("window.livemicro.map && window.livemicro.mapView", 20));
  EXPECT_EQ (page->evaluate ("window.livemicro.map.masked_um.length"), "1");
  EXPECT_NE (page->evaluate ("document.getElementById('map-note').textContent").find ("label area masked"),
             std::string::npos);
  EXPECT_EQ (refused (*page), "");
  HttpReply o = d.create_session ("olga", "owner");
  ASSERT_EQ (o.status, 201);
  // Wait for the slide's macro image (it shows the label the stage never visited).
  bool macro = false;
  for (int i = 0; i < 400 && !macro; i++, g_usleep (100000)) {
    HttpReply m = d.request ("GET", "/api/v1/microscopes/demo/overview", "", o.str ("token"));
    macro = m.status == 200 && json_object_get_boolean_member (m.object (), "macro");
  }
  ASSERT_TRUE (macro);
  // The label of the synthetic slide: x 0–20 mm, the whole height.
  auto label_pixels = [] (const HttpReply &png, cv::Mat &label) {
    cv::Mat bgr = cv::imdecode (cv::Mat (1, (int)png.body.size (), CV_8UC1, (void *)png.body.data ()),
                                cv::IMREAD_COLOR);
    if (bgr.empty ())
      return false;
    int label_cols = (int)std::floor (20000.0 / 75000.0 * bgr.cols);
    label = bgr (cv::Rect (0, 0, label_cols, bgr.rows));
    return true;
  };
  HttpReply guest_png = d.request ("GET", "/api/v1/microscopes/demo/overview.png", "", g.str ("token"));
  HttpReply owner_png = d.request ("GET", "/api/v1/microscopes/demo/overview.png", "", o.str ("token"));
  ASSERT_EQ (guest_png.status, 200);
  ASSERT_EQ (owner_png.status, 200);
  EXPECT_EQ (guest_png.content_type, "image/png");
  cv::Mat guest_label, owner_label;
  ASSERT_TRUE (label_pixels (guest_png, guest_label));
  ASSERT_TRUE (label_pixels (owner_png, owner_label));
  EXPECT_LE (guest_label.rows, 60) << "coarse: 0.5 mm per pixel for a profile that masks print anywhere";
  cv::Mat not_mask;
  cv::inRange (guest_label, cv::Scalar (104, 96, 96), cv::Scalar (104, 96, 96), not_mask);
  EXPECT_EQ (cv::countNonZero (not_mask), guest_label.rows * guest_label.cols) << "every label pixel masked";
  cv::Mat dark;
  cv::inRange (owner_label, cv::Scalar (0, 0, 0), cv::Scalar (90, 90, 90), dark);
  EXPECT_GT (cv::countNonZero (dark), 20) << "the owner's map shows the label's print";
  // No token, another microscope's route: refused like the rest of the API.
  EXPECT_EQ (d.request ("GET", "/api/v1/microscopes/demo/overview.png", "", "").status, 401);
}

} // namespace
