// The daemon ↔ worker wire (orchestrator/common/wire.cpp): read_message on
// a socket pair holding the fuzzed bytes, its write end closed so that EOF
// ends every read (no hang on a short input).
// Contract: each message read has a known type and at most kMaxMessageBytes
// of body, and the buffer never grew beyond that; the bytes consumed are
// exactly the messages read, as Writer writes them again; a short or
// malformed message ends reading (false), it is never half-delivered.
#include "common/wire.h"
#include "fuzz_util.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

using namespace livemicro::orchestrator::wire;

namespace {

// A Unix stream socket pair, as between livemicrod and its worker, with
// room for the whole input at once: nothing blocks.
struct Link {
  int fd[2] = {-1, -1};
  explicit Link (size_t capacity)
  {
    FUZZ_CHECK (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0, std::strerror (errno));
    int bytes = (int)std::max<size_t> (2 * capacity + 65536, 262144);
    setsockopt (fd[1], SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
    setsockopt (fd[0], SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  }
  ~Link ()
  {
    close_write ();
    if (fd[0] >= 0)
      close (fd[0]);
  }
  // The reader then sees EOF after the data.
  void close_write ()
  {
    if (fd[1] >= 0)
      close (fd[1]);
    fd[1] = -1;
  }
  void write_all (const uint8_t *p, size_t n)
  {
    while (n > 0) {
      ssize_t w = send (fd[1], p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
      FUZZ_CHECK (w > 0, std::string ("the link is full: ") + std::strerror (errno));
      p += w;
      n -= (size_t)w;
    }
  }
  std::vector<uint8_t> read_rest ()
  {
    std::vector<uint8_t> out;
    uint8_t buf[4096];
    ssize_t r;
    while ((r = read (fd[0], buf, sizeof buf)) > 0)
      out.insert (out.end (), buf, buf + r);
    return out;
  }
};

} // namespace

extern "C" int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  Link in (size);
  in.write_all (data, size);
  in.close_write ();

  std::vector<std::pair<Type, std::vector<uint8_t>>> messages;
  for (;;) {
    Type type;
    std::vector<uint8_t> body;
    if (!read_message (in.fd[0], type, body))
      break;
    FUZZ_CHECK (type == Type::kCommand || type == Type::kEvent || type == Type::kFrame,
                "type " + std::to_string ((uint32_t)type));
    FUZZ_CHECK (body.size () <= kMaxMessageBytes && body.capacity () <= kMaxMessageBytes,
                "body of " + std::to_string (body.capacity ()) + " bytes");
    messages.emplace_back (type, std::move (body));
  }
  std::vector<uint8_t> rest = in.read_rest ();
  FUZZ_CHECK (rest.size () <= size, "more bytes than written");
  size_t consumed = size - rest.size ();

  // Written again, the messages are the bytes consumed — except the last
  // read, which may have taken part of a message that was then refused.
  Link out (size);
  Writer w (out.fd[1]);
  for (const auto &m : messages)
    FUZZ_CHECK (w.send (m.first, m.second.data (), m.second.size (), nullptr, 0), "Writer::send failed");
  out.close_write ();
  std::vector<uint8_t> again = out.read_rest ();
  FUZZ_CHECK (again.size () <= consumed
                  && (again.empty () || std::memcmp (again.data (), data, again.size ()) == 0),
              "the messages read are not the bytes written (" + std::to_string (again.size ()) + " vs "
                  + std::to_string (consumed) + " bytes)");
  return 0;
}
