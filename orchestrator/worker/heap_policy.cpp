#include "heap_policy.h"

#include <algorithm>

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace livemicro::orchestrator {

void
fit_allocator_thresholds (size_t frame_bytes)
{
#ifdef __GLIBC__
  constexpr size_t kMinBytes = 4 << 20, kMaxBytes = 32 << 20;
  const int bytes = (int)std::min (kMaxBytes, std::max (kMinBytes, frame_bytes + (1 << 20)));
  // Setting either fixes it: glibc no longer raises it with the blocks freed.
  mallopt (M_MMAP_THRESHOLD, bytes);
  mallopt (M_TRIM_THRESHOLD, bytes);
#else
  (void)frame_bytes;
#endif
}

void
give_back_freed_memory ()
{
#ifdef __GLIBC__
  malloc_trim (0);
#endif
}

} // namespace livemicro::orchestrator
