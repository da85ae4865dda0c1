// What a compose: URI (or a bare camera URI) says, parsed without opening
// any device: the part URIs, the objectives and the one selected at start.
// composed_microscope.cpp opens the parts; the fuzz target checks the parse.
#pragma once

#include <livemicro/hw/microscope.h>
#include <livemicro/hw/uri.h>

#include <string>
#include <vector>

namespace livemicro::hw::compose {

struct ComposeSpec {
  std::string camera;                // a camera URI, never empty
  std::string stage, focus;          // controller URIs; empty: none
  std::vector<Objective> objectives; // ≥ 1, distinct magnifications
  int selected = 0;                  // the magnification of one of them
};

// compose:?camera=URI[&stage=URI][&focus=URI][&objectives=…][&objective=MAG]
// Throws Error(kUnsupported) for a malformed composition and
// Error(kOutOfRange) for a bad objective, naming the URI.
ComposeSpec parse_compose (const MicroscopeUri &uri);

// "MAG:UM_PER_PX[:NA],…": magnification 1–1000, µm/px in (0, 100], NA in
// [0, 1.6], each magnification once.  Throws Error(kOutOfRange) naming `uri`.
std::vector<Objective> parse_objectives (const std::string &uri, const std::string &text);
// "10x (0.69 µm/px), 40x (0.17 µm/px)", for messages.
std::string objectives_text (const std::vector<Objective> &objectives);

} // namespace livemicro::hw::compose
