// livemicro::privacy — view profiles: who sees what.
//
// A profile says, for one kind of viewer (owner, consultant, trainee, guest,
// ...), which configured slide regions are masked, which region classes are
// searched for in every frame and masked once found, which buffer metas and
// stream tags are removed, whether the viewer may take control of the
// microscope and which overlays may be drawn for them.  The same model is used
// by the `privacymask` element and by the orchestrator (livemicrod), so that
// the two never disagree about a profile.
//
// Profiles come built in (builtin_profiles()) or from a JSON file whose format
// is described in docs/privacy.md ("View profiles file") and shown in
// pipelines/profiles.json.  Loading is all-or-nothing: a malformed file
// throws ProfileError naming the file, the line and the field, and nothing of
// it is used.
#pragma once

#include <opencv2/core/types.hpp>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace livemicro::privacy {

// What a region shows.  Detectors report kLabel (printed text on paper),
// kQr, kBarcode (1D) and kText (printed text anywhere).
enum class RegionClass { kLabel, kQr, kBarcode, kText };
const char *region_class_name (RegionClass c);
std::optional<RegionClass> region_class_from_name (const std::string &name);
const std::vector<RegionClass> &all_region_classes ();

// Axis-aligned bounds of a polygon (empty for no points).
cv::Rect2d bounding_box (const std::vector<cv::Point2d> &points);

// A configured region: a polygon in slide µm (a rectangle is 4 points).
struct SlideRegion {
  std::string name;
  RegionClass region_class = RegionClass::kLabel;
  std::vector<cv::Point2d> polygon_um; // ≥ 3 points, finite
  cv::Rect2d bounds_um () const;
};

// What happens to StageMeta on the way to this viewer.
enum class StageMetaPolicy {
  kKeep,     // as captured
  kGeometry, // position, objective, µm/px, frame size kept; capture time and
             // frame number zeroed (when a frame was taken says who was there)
  kRemove,
};
const char *stage_meta_policy_name (StageMetaPolicy p);

struct Profile {
  std::string name;
  std::string description;
  // Names of configured regions masked in this view ("*": all of them).
  std::vector<std::string> regions;
  // Region classes searched for in every frame; a region found is remembered
  // in slide coordinates and masked from then on.
  std::vector<RegionClass> detect;
  // GstMeta API type names removed from every buffer, e.g.
  // "LivemicroFeaturesMetaAPI" ("*": every meta but StageMeta and video
  // geometry metas).
  std::vector<std::string> strip_metas;
  StageMetaPolicy stage_meta = StageMetaPolicy::kKeep;
  // GstTagList tag names removed from tag events ("*": all tags except
  // those in keep_tags).
  std::vector<std::string> strip_tags;
  std::vector<std::string> keep_tags;
  // For the orchestrator: may this viewer request the control lease, and
  // which overlays may be drawn in this view ("analysis", "pointers", ...).
  bool may_control = false;
  std::vector<std::string> overlays;
  // Fields for other components (e.g. livemicrod's encoding limits), kept
  // uninterpreted: the JSON text of the profile's "extensions" object, or
  // "" when absent.  privacymask ignores it.
  std::string extensions_json;

  // True when the profile masks anything (configured regions or detection):
  // then every frame needs a StageMeta, else it is blanked.
  bool masks_anything () const { return !regions.empty () || !detect.empty (); }
  bool detects (RegionClass c) const;
  bool strips_meta (const std::string &api_name) const;
  bool strips_tag (const std::string &tag) const;
  bool may_draw (const std::string &overlay) const;
};

// A complete set: the configured regions and the profiles that use them.
struct ProfileSet {
  std::string source; // file path, or "built-in"
  std::vector<SlideRegion> regions;
  std::vector<Profile> profiles;

  const Profile *find (const std::string &name) const;
  std::vector<std::string> names () const;
  // The configured regions a profile masks.
  std::vector<const SlideRegion *> regions_for (const Profile &profile) const;
};

class ProfileError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// owner (nothing masked, may control, all overlays), consultant and trainee
// (slide label masked), guest (label, QR codes, barcodes and any printed
// text masked; analysis and patient metadata stripped).  The built-in label
// region is the label end of a standard 75 × 25 mm slide: x 0–20 mm, full
// height (where sim://synthetic prints its label).
const ProfileSet &builtin_profiles ();

// Parses a profiles file.  Throws ProfileError("FILE:LINE: FIELD: problem").
ProfileSet load_profiles_file (const std::string &path);
// Parses JSON text; `source` names it in error messages.
ProfileSet parse_profiles (const std::string &json, const std::string &source);

} // namespace livemicro::privacy
