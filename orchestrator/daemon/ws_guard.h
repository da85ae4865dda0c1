// Server-side WebSockets whose messages are bounded as a whole.
//
// libsoup 3.2 (Debian 12) checks max-incoming-payload-size per frame only:
// a message sent in many fragments is assembled without limit (12 MB were
// accepted).  So the daemon upgrades WebSocket requests itself and puts a
// counting stream under the connection: the bytes read since the last whole
// message (or pong) may not pass the limit, else the connection is closed
// with 1009 (message too big) and nothing more is read.  No extensions are
// negotiated (permessage-deflate would let a small frame inflate without
// bound, and these messages are small JSON).
#pragma once

#include <libsoup/soup.h>

#include <cstddef>
#include <string>

namespace livemicro::orchestrator {

// Whether `msg` asks for a WebSocket upgrade (GET with Upgrade: websocket).
bool is_websocket_request (SoupServerMessage *msg);

// Answers the handshake with 101; once it is written, `accepted` gets the
// new connection (a reference it must take if it keeps it) on the main
// context.  False, with `why`, when the handshake is invalid (nothing is
// answered: the caller says 400).
using WebsocketAccepted
    = void (*) (SoupServerMessage *msg, SoupWebsocketConnection *conn, gpointer user_data);
bool accept_websocket (SoupServerMessage *msg, size_t max_message_bytes, WebsocketAccepted accepted,
                       gpointer user_data, std::string *why);

} // namespace livemicro::orchestrator
