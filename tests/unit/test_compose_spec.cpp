// compose: URIs parsed without opening anything (hw/compose/compose_spec.h).
// Opening the parts is tested in test_cameras.cpp.
#include "compose/compose_spec.h"
#include "hw_error.h"

#include <livemicro/hw/error.h>
#include <livemicro/hw/uri.h>

#include <gtest/gtest.h>

using namespace livemicro::hw;
using livemicro::test::contains;
using livemicro::test::error_of;

namespace {

compose::ComposeSpec
spec (const std::string &uri)
{
  return compose::parse_compose (MicroscopeUri (uri));
}

} // namespace

TEST (ComposeSpec, PartsObjectivesAndTheSelectedOne)
{
  auto s = spec ("compose:?camera=aravis://Basler-1?exposure_us=800%26gain=2"
                 "&stage=grbl:///dev/ttyUSB0?x_offset_um=2000"
                 "&objectives=10:0.69,40:0.17:0.65&objective=40");
  EXPECT_EQ (s.camera, "aravis://Basler-1?exposure_us=800&gain=2");
  EXPECT_EQ (s.stage, "grbl:///dev/ttyUSB0?x_offset_um=2000");
  EXPECT_EQ (s.focus, "");
  ASSERT_EQ (s.objectives.size (), 2u);
  EXPECT_EQ (s.objectives[1].magnification, 40);
  EXPECT_DOUBLE_EQ (s.objectives[1].um_per_px, 0.17);
  EXPECT_DOUBLE_EQ (s.objectives[1].numerical_aperture, 0.65);
  EXPECT_EQ (s.selected, 40);
  auto bare = spec ("compose:?camera=v4l2:///dev/video0");
  ASSERT_EQ (bare.objectives.size (), 1u);
  EXPECT_EQ (bare.objectives[0].magnification, 1);
  EXPECT_EQ (bare.selected, 1);
}

// Found by tests/fuzz (fuzz-uri): sscanf's %d wrapped 4294967306 to 10, and
// a NaN numerical aperture passed the range check.
TEST (ComposeSpec, ObjectivesAreTheNumbersWrittenAndInRange)
{
  for (const char *bad : {"4294967306:0.5", "10:0.5:nan", "10:nan", "10:inf", "10:0.5:1.7",
                          "10:0.5:", "10:0.5 ", "10", "10:0.5:0.3x", "0:1", "1001:1"})
    EXPECT_TRUE (contains (
        error_of ([&] { spec (std::string ("compose:?camera=aravis://Fake_1&objectives=") + bad); }),
        "is not MAGNIFICATION:UM_PER_PX[:NA]"))
        << bad;
  EXPECT_TRUE (contains (error_of ([] {
                           spec ("compose:?camera=aravis://Fake_1"
                                 "&objectives=10:1,10:2");
                         }),
                         "objective 10x is listed twice"));
  EXPECT_TRUE (contains (error_of ([] {
                           spec ("compose:?camera=aravis://Fake_1"
                                 "&objectives=10:1&objective=4294967306");
                         }),
                         "objective=4294967306"));
}
