// livemicroctl's API commands: sessions and microscopes over livemicrod's
// HTTP API.
#pragma once

int livemicroctl_api (int argc, char **argv); // argv[0] is "session" or "microscope"
