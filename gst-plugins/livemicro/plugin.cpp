#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstfeatureoverlay.h"
#include "gsti420convert.h"
#include "gstmicroscopesrc.h"
#include "gsttumorfeatures.h"
#include "gstprivacymask.h"

static gboolean
plugin_init (GstPlugin *plugin)
{
  gboolean ret = FALSE;
  ret |= GST_ELEMENT_REGISTER (microscopesrc, plugin);
  ret |= GST_ELEMENT_REGISTER (tumorfeatures, plugin);
  ret |= GST_ELEMENT_REGISTER (featureoverlay, plugin);
  ret |= GST_ELEMENT_REGISTER (privacymask, plugin);
  ret |= GST_ELEMENT_REGISTER (i420convert, plugin);
  return ret;
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, livemicro,
                   "LiveMicro: live, collaborative telepathology (virtual and real "
                   "microscopes, H&E analysis, privacy masks)",
                   plugin_init, VERSION, GST_LICENSE, GST_PACKAGE_NAME, GST_PACKAGE_ORIGIN)
