// The annotated MoNuSeg tiles of ../shared/testdata/monuseg (SOURCES.md):
// which organ each is, its pixels and its nucleus outlines as instance labels
// (polygons filled in file order with rounded vertices, as
// TCGA-B0-5710-01Z-00-DX1_labels_derived.png and scripts/train-nuclei do).
// Read by path, never copied into the repository (CC BY-NC-SA 4.0).
#pragma once

#include <glib.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace livemicro::bench {

struct MonusegTile {
  const char *stem;
  const char *organ;
};

// Five organs; scripts/train-nuclei has the same table.
inline const std::vector<MonusegTile> &
monuseg_tiles ()
{
  static const std::vector<MonusegTile> tiles = {
      {"TCGA-AR-A1AK-01Z-00-DX1", "breast"},   {"TCGA-AR-A1AS-01Z-00-DX1", "breast"},
      {"TCGA-E2-A1B5-01Z-00-DX1", "breast"},   {"TCGA-NH-A8F7-01A-01-TS1", "colon"},
      {"TCGA-B0-5698-01Z-00-DX1", "kidney"},   {"TCGA-B0-5710-01Z-00-DX1", "kidney"},
      {"TCGA-B0-5711-01Z-00-DX1", "kidney"},   {"TCGA-21-5784-01Z-00-DX1", "lung"},
      {"TCGA-21-5786-01Z-00-DX1", "lung"},     {"TCGA-50-5931-01Z-00-DX1", "lung"},
      {"TCGA-G9-6362-01Z-00-DX1", "prostate"},
  };
  return tiles;
}

struct AnnotatedTile {
  cv::Mat bgr;    // CV_8UC3
  cv::Mat labels; // CV_32S instance labels, 0 = background
  double um_per_px = 0;
  int annotated = 0; // polygons in the XML
};

namespace detail {

struct XmlState {
  double um_per_px = 0;
  std::vector<std::vector<cv::Point>> polygons;
  bool in_region = false;
};

inline void
xml_start (GMarkupParseContext *, const gchar *name, const gchar **attr_names, const gchar **attr_values,
           gpointer data, GError **)
{
  auto *st = static_cast<XmlState *> (data);
  auto attr = [&] (const char *key) -> const char * {
    for (int k = 0; attr_names[k]; k++)
      if (!std::strcmp (attr_names[k], key))
        return attr_values[k];
    return nullptr;
  };
  if (!std::strcmp (name, "Annotations")) {
    if (const char *m = attr ("MicronsPerPixel"))
      st->um_per_px = g_ascii_strtod (m, nullptr);
  } else if (!std::strcmp (name, "Region")) {
    st->polygons.emplace_back ();
    st->in_region = true;
  } else if (!std::strcmp (name, "Vertex") && st->in_region) {
    const char *x = attr ("X"), *y = attr ("Y");
    if (x && y)
      st->polygons.back ().emplace_back ((int)std::lround (g_ascii_strtod (x, nullptr)),
                                         (int)std::lround (g_ascii_strtod (y, nullptr)));
  }
}

inline void
xml_end (GMarkupParseContext *, const gchar *name, gpointer data, GError **)
{
  if (!std::strcmp (name, "Region"))
    static_cast<XmlState *> (data)->in_region = false;
}

} // namespace detail

// Reads <dir>/monuseg/<stem>.png and .xml; false (and `error`) when either
// is missing or unreadable.
inline bool
read_annotated_tile (const std::string &testdata, const std::string &stem, AnnotatedTile &out,
                     std::string &error)
{
  const std::string base = testdata + "/monuseg/" + stem;
  out.bgr = cv::imread (base + ".png", cv::IMREAD_COLOR);
  if (out.bgr.empty ()) {
    error = "cannot read " + base + ".png";
    return false;
  }
  gchar *text = nullptr;
  gsize len = 0;
  GError *err = nullptr;
  if (!g_file_get_contents ((base + ".xml").c_str (), &text, &len, &err)) {
    error = err->message;
    g_error_free (err);
    return false;
  }
  detail::XmlState st;
  GMarkupParser parser = {detail::xml_start, detail::xml_end, nullptr, nullptr, nullptr};
  GMarkupParseContext *ctx = g_markup_parse_context_new (&parser, (GMarkupParseFlags)0, &st, nullptr);
  bool ok = g_markup_parse_context_parse (ctx, text, (gssize)len, &err)
            && g_markup_parse_context_end_parse (ctx, &err);
  g_markup_parse_context_free (ctx);
  g_free (text);
  if (!ok) {
    error = base + ".xml: " + err->message;
    g_error_free (err);
    return false;
  }
  out.um_per_px = st.um_per_px > 0 ? st.um_per_px : 0.25;
  out.labels = cv::Mat::zeros (out.bgr.size (), CV_32S);
  out.annotated = 0;
  for (size_t k = 0; k < st.polygons.size (); k++) {
    if (st.polygons[k].size () < 3)
      continue;
    cv::fillPoly (out.labels, std::vector<std::vector<cv::Point>>{st.polygons[k]},
                  cv::Scalar ((double)k + 1));
    out.annotated++;
  }
  return true;
}

} // namespace livemicro::bench
