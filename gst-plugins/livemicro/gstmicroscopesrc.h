#pragma once

#include <gst/base/gstpushsrc.h>

G_BEGIN_DECLS

#define GST_TYPE_MICROSCOPE_SRC (gst_microscope_src_get_type ())
G_DECLARE_FINAL_TYPE (GstMicroscopeSrc, gst_microscope_src, GST, MICROSCOPE_SRC, GstPushSrc)
GST_ELEMENT_REGISTER_DECLARE (microscopesrc);

G_END_DECLS

#ifdef __cplusplus
#include <livemicro/hw/microscope.h>

#include <memory>

/* The microscope a microscopesrc has open (its "get-microscope" action
 * signal), or nullptr while the element is stopped.  For applications that
 * link LiveMicro's hardware library and command the stage, focus and turret
 * directly (livemicro-worker's hardware thread); gst-launch users keep the
 * properties. */
inline std::shared_ptr<livemicro::hw::Microscope>
livemicro_microscopesrc_get_microscope (GstElement *microscopesrc)
{
  gpointer handle = nullptr;
  g_signal_emit_by_name (microscopesrc, "get-microscope", &handle);
  if (!handle)
    return nullptr;
  auto *held = static_cast<std::shared_ptr<livemicro::hw::Microscope> *> (handle);
  std::shared_ptr<livemicro::hw::Microscope> scope = std::move (*held);
  delete held;
  return scope;
}
#endif
