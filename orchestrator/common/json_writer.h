// JSON text from a json-glib tree, with each number in its shortest form.
//
// json-glib 1.6 writes every double with 17 significant digits: a position
// rounded to 0.01 µm, 37512.35, goes out as 37512.349999999999, and 0.1 as
// 0.10000000000000001.  Most of what the daemon sends is such numbers (a
// field's nucleus outlines: thousands of them, twice a second, to every
// page that shows the analysis), so the text was ~1.6 times its size.
// Here a double is written as the shortest text that reads back as the same
// double (std::to_chars), still with a point or an exponent so that a reader
// sees a double, as json-glib's own parser does; the rest is as
// json_to_string (node, FALSE) writes it.
#pragma once

#include <json-glib/json-glib.h>

#include <string>

namespace livemicro::orchestrator {

// Compact JSON text of `node` (nullptr: "null").  Objects keep their
// members' order.  A double that is not finite is written as null (JSON has
// none); strings are escaped as JSON requires.
std::string json_text (JsonNode *node);

// The builder's root, as json_text ().
std::string json_text (JsonBuilder *builder);

// One double as json_text () writes it: "0.1", "37512.35", "2.0", "1e+300".
void append_json_number (std::string &out, double v);

} // namespace livemicro::orchestrator
