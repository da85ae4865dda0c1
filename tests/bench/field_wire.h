// Experiment 1 of bench-edge-vs-cloud on the wire (TCP): the microscope sends
// a field to the analysing node, which sends the processed image to the
// pathologist.  Integers are little-endian (one machine).
//   field:  int64 sent_unix_us, uint32 png_bytes, png
//   reply:  int64 sent_unix_us, int32 nuclei (-1: not analysed),
//           uint32 field_bytes, uint32 jpeg_bytes, jpeg
#pragma once

#include <gio/gio.h>

#include <cstdint>
#include <vector>

namespace livemicro::bench::field {

struct Reply {
  int64_t sent_unix_us = 0; // when the microscope started sending the field
  int32_t nuclei = -1;
  uint32_t field_bytes = 0;
  std::vector<uint8_t> jpeg; // the field with the analysis drawn
};

inline bool
write_all (GSocketConnection *c, const void *data, size_t len)
{
  return g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (c)), data, len, nullptr,
                                    nullptr, nullptr);
}

inline bool
read_all (GSocketConnection *c, void *data, size_t len)
{
  gsize got = 0;
  return g_input_stream_read_all (g_io_stream_get_input_stream (G_IO_STREAM (c)), data, len, &got, nullptr,
                                  nullptr)
         && got == len;
}

inline bool
write_field (GSocketConnection *c, int64_t sent_unix_us, const std::vector<uint8_t> &png)
{
  const uint32_t n = (uint32_t)png.size ();
  return write_all (c, &sent_unix_us, 8) && write_all (c, &n, 4) && write_all (c, png.data (), n);
}

inline bool
read_field (GSocketConnection *c, int64_t &sent_unix_us, std::vector<uint8_t> &png)
{
  uint32_t n = 0;
  if (!read_all (c, &sent_unix_us, 8) || !read_all (c, &n, 4) || n > (64u << 20))
    return false;
  png.resize (n);
  return read_all (c, png.data (), n);
}

inline bool
write_reply (GSocketConnection *c, const Reply &r)
{
  const uint32_t n = (uint32_t)r.jpeg.size ();
  return write_all (c, &r.sent_unix_us, 8) && write_all (c, &r.nuclei, 4) && write_all (c, &r.field_bytes, 4)
         && write_all (c, &n, 4) && write_all (c, r.jpeg.data (), n);
}

inline bool
read_reply (GSocketConnection *c, Reply &r)
{
  uint32_t n = 0;
  if (!read_all (c, &r.sent_unix_us, 8) || !read_all (c, &r.nuclei, 4) || !read_all (c, &r.field_bytes, 4)
      || !read_all (c, &n, 4) || n > (64u << 20))
    return false;
  r.jpeg.resize (n);
  return read_all (c, r.jpeg.data (), n);
}

} // namespace livemicro::bench::field
