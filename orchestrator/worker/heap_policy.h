// How the media worker gives back the memory of a removed view branch.
//
// A worker's view branches come and go with their viewers, each with its
// own streaming thread, frames of megabytes and an encoder. glibc keeps one
// arena per streaming thread, and by default raises its mmap threshold to
// the size of each large block freed (up to 32 MB) and its trim threshold
// to twice that: after the first such free (the slide's blocks of 12-23 MB)
// every frame and working buffer lives in the arenas, and an arena other
// than the main one keeps the free space at its top, tens of MB that
// malloc_trim does not return (it trims only the main arena's top). So the
// worker fixes both thresholds just above its capture frame's size: a frame
// still comes from an arena (below, every frame buffer would be mapped and
// faulted in anew: 4 ms of CPU each at 1080p), a larger block (the
// analysis' working set, the slide) is mapped on its own and unmapped when
// freed, and an arena gives back the free space at its top beyond that.
// jemalloc and one glibc arena were measured too and cost the RTSP tail;
// docs/benchmarks.md ("Branch memory") has the figures.
#pragma once

#include <cstddef>

namespace livemicro::orchestrator {

// Fixes glibc's mmap and trim thresholds at `frame_bytes` + 1 MB, at least
// 4 MB and at most 32 MB (glibc's ceiling). From the first captured frame
// on, and again whenever the frame size changes. Not before: opening the
// virtual microscope builds its slide from dozens of temporary blocks of
// ~13 MB, which glibc's raised threshold lets the heap reuse; mapped one by
// one they made a worker's restart ~170 ms slower. Any thread.
void fit_allocator_thresholds (size_t frame_bytes);

// What was freed goes back to the system now: malloc_trim, which returns
// the free pages inside every arena and the main arena's top. After a
// branch's teardown and the slide map's start-up render. Any thread.
void give_back_freed_memory ();

} // namespace livemicro::orchestrator
