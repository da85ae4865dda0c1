/* LiveMicro — StageMeta ⇄ livemicro::hw::FrameRecord (C++ only).
 *
 * StageMeta (stagemeta.h) is the public carrier of a frame's record inside a
 * pipeline; hw::FrameRecord (livemicro/hw/frame_record.h) is the same record
 * as plain C++ for the code around the pipeline (the hardware layer, the
 * worker, its wire to livemicrod).  These two functions are the only place
 * that copies one into the other, field by field.  Needs the hw include
 * directory besides this one.
 */
#pragma once

#include <livemicro/hw/frame_record.h>
#include <livemicro/stagemeta.h>

namespace livemicro {

inline hw::FrameRecord
frame_record_of (const LivemicroStageMeta &m)
{
  hw::FrameRecord r;
  r.stage_x_um = m.stage_x_um;
  r.stage_y_um = m.stage_y_um;
  r.stage_z_um = m.stage_z_um;
  r.objective = (int)m.objective;
  r.um_per_px = m.um_per_px;
  r.frame_width = (int)m.frame_width;
  r.frame_height = (int)m.frame_height;
  r.moving = m.moving != FALSE;
  r.capture_unix_us = m.capture_unix_us;
  r.frame_number = m.frame_number;
  return r;
}

/* Adds a StageMeta holding `r` to a writable buffer. */
inline LivemicroStageMeta *
add_frame_record_meta (GstBuffer *buf, const hw::FrameRecord &r)
{
  LivemicroStageMeta *m = livemicro_buffer_add_stage_meta (buf);
  m->stage_x_um = r.stage_x_um;
  m->stage_y_um = r.stage_y_um;
  m->stage_z_um = r.stage_z_um;
  m->objective = (guint)r.objective;
  m->um_per_px = r.um_per_px;
  m->frame_width = (guint)r.frame_width;
  m->frame_height = (guint)r.frame_height;
  m->moving = r.moving;
  m->capture_unix_us = r.capture_unix_us;
  m->frame_number = r.frame_number;
  return m;
}

} // namespace livemicro
