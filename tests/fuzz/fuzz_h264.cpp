// The H.264 Annex-B helpers and LiveMicro's SEI (orchestrator/common/h264.cpp)
// on arbitrary bytes.  Contract: NAL units lie inside the buffer, in order,
// each behind a start code; has_nal agrees with nal_units; the parameter
// sets re-parse to the same NAL units; capture_time agrees with frame_info;
// and an access unit without SEI, given a frame info by with_frame_record,
// gives exactly that frame info back.
#include "common/h264.h"
#include "fuzz_util.h"

#include <cstring>
#include <set>

using namespace livemicro::orchestrator::h264;

namespace {

std::string
where (const Nal &n)
{
  return "NAL at " + std::to_string (n.start) + ", payload " + std::to_string (n.payload) + ", end "
         + std::to_string (n.end);
}

void
check_nals (const uint8_t *au, size_t len, const std::vector<Nal> &nals)
{
  size_t prev_end = 0;
  for (const Nal &n : nals) {
    FUZZ_CHECK (n.start >= prev_end && n.start < n.payload && n.payload <= n.end && n.end <= len,
                where (n) + " of " + std::to_string (len));
    size_t sc = n.payload - n.start;
    FUZZ_CHECK ((sc == 3 && !std::memcmp (au + n.start, "\0\0\1", 3))
                    || (sc == 4 && !std::memcmp (au + n.start, "\0\0\0\1", 4)),
                "no start code at " + where (n));
    FUZZ_CHECK (n.type == (n.payload < len ? (au[n.payload] & 0x1f) : 0), "type of " + where (n));
    prev_end = n.end;
  }
}

livemicro::hw::FrameRecord
info_from (const uint8_t *data, size_t size)
{
  // The last 53 bytes (when there are that many) choose the frame info,
  // NaN and infinities included.
  uint8_t b[53] = {};
  size_t n = std::min (size, sizeof b);
  std::memcpy (b, data + size - n, n);
  livemicro::hw::FrameRecord f;
  std::memcpy (&f.capture_unix_us, b, 8);
  std::memcpy (&f.stage_x_um, b + 8, 8);
  std::memcpy (&f.stage_y_um, b + 16, 8);
  std::memcpy (&f.stage_z_um, b + 24, 8);
  std::memcpy (&f.um_per_px, b + 32, 8);
  std::memcpy (&f.objective, b + 40, 4);
  f.moving = b[44] & 1;
  return f;
}

bool
same_bits (double a, double b)
{
  return !std::memcmp (&a, &b, sizeof a);
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  std::vector<Nal> nals = nal_units (data, size);
  check_nals (data, size, nals);
  // has_nal for the types present and the one LiveMicro looks for most.
  std::set<uint8_t> types = {kSei};
  for (const Nal &n : nals)
    types.insert (n.type);
  for (uint8_t t : types) {
    bool any = false;
    for (const Nal &n : nals)
      any = any || n.type == t;
    FUZZ_CHECK (has_nal (data, size, t) == any, "has_nal " + std::to_string (t));
  }

  std::vector<uint8_t> ps = parameter_sets (data, size);
  std::vector<Nal> ps_nals = nal_units (ps.data (), ps.size ());
  check_nals (ps.data (), ps.size (), ps_nals);
  size_t k = 0;
  for (const Nal &n : nals) {
    if (n.type != kSps && n.type != kPps)
      continue;
    FUZZ_CHECK (k < ps_nals.size (), "a parameter set is missing");
    const Nal &p = ps_nals[k++];
    FUZZ_CHECK (p.end - p.payload == n.end - n.payload
                    && !std::memcmp (ps.data () + p.payload, data + n.payload, n.end - n.payload),
                "parameter set changed: " + where (n));
  }
  FUZZ_CHECK (k == ps_nals.size (), "extra NAL units in the parameter sets");

  std::optional<livemicro::hw::FrameRecord> fi = frame_record (data, size);
  std::optional<int64_t> ct = capture_time (data, size);
  FUZZ_CHECK (fi.has_value () == ct.has_value () && (!fi || fi->capture_unix_us == *ct),
              "capture_time and frame_info disagree");
  FUZZ_CHECK (!fi || has_nal (data, size, kSei), "frame info without an SEI");

  livemicro::hw::FrameRecord info = info_from (data, size);
  std::vector<uint8_t> with = with_frame_record (data, size, info);
  FUZZ_CHECK (with.size () > size, "nothing inserted");
  check_nals (with.data (), with.size (), nal_units (with.data (), with.size ()));
  std::optional<livemicro::hw::FrameRecord> back = frame_record (with.data (), with.size ());
  FUZZ_CHECK (back.has_value (), "the inserted SEI is not found");
  if (!has_nal (data, size, kSei)) {
    FUZZ_CHECK (back->capture_unix_us == info.capture_unix_us && same_bits (back->stage_x_um, info.stage_x_um)
                    && same_bits (back->stage_y_um, info.stage_y_um)
                    && same_bits (back->stage_z_um, info.stage_z_um)
                    && same_bits (back->um_per_px, info.um_per_px) && back->objective == info.objective
                    && back->moving == info.moving,
                "frame info changed on the way");
    // The access unit's own NAL units are all still there.
    size_t own = 0;
    for (const Nal &n : nal_units (with.data (), with.size ()))
      own += n.type != kSei;
    size_t before = 0;
    for (const Nal &n : nals)
      before += n.type != kSei;
    FUZZ_CHECK (own == before,
                "NAL units lost or gained: " + std::to_string (before) + " → " + std::to_string (own));
  }
  return 0;
}
