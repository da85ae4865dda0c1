#include "wire.h"

#include <algorithm>

#include <cerrno>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace livemicro::orchestrator::wire {

namespace {

constexpr uint32_t kMagic = 0x314d574cu; // "LWM1"

struct Prefix {
  uint32_t magic;
  uint32_t type;
  uint32_t length;
};

bool
read_all (int fd, void *buf, size_t n)
{
  auto *p = static_cast<uint8_t *> (buf);
  while (n > 0) {
    ssize_t r = ::read (fd, p, n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return false;
    p += r;
    n -= (size_t)r;
  }
  return true;
}

} // namespace

bool
Writer::send (Type type, const void *head, size_t head_len, const void *body, size_t body_len)
{
  if (head_len + body_len > kMaxMessageBytes)
    return false;
  Prefix prefix{kMagic, static_cast<uint32_t> (type), static_cast<uint32_t> (head_len + body_len)};
  iovec iov[3] = {
      {&prefix, sizeof prefix}, {const_cast<void *> (head), head_len}, {const_cast<void *> (body), body_len}};
  int count = body_len ? 3 : 2;
  std::lock_guard<std::mutex> lock (mutex_);
  size_t total = sizeof prefix + head_len + body_len;
  iovec *v = iov;
  while (total > 0) {
    msghdr msg{};
    msg.msg_iov = v;
    msg.msg_iovlen = (size_t)count;
    ssize_t w = ::sendmsg (fd_, &msg, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    total -= (size_t)w;
    // Skip what was written.
    size_t done = (size_t)w;
    while (count > 0 && done >= v->iov_len) {
      done -= v->iov_len;
      v++;
      count--;
    }
    if (count > 0) {
      v->iov_base = static_cast<uint8_t *> (v->iov_base) + done;
      v->iov_len -= done;
    }
  }
  return true;
}

bool
read_message (int fd, Type &type, std::vector<uint8_t> &body)
{
  Prefix prefix;
  if (!read_all (fd, &prefix, sizeof prefix))
    return false;
  if (prefix.magic != kMagic || prefix.length > kMaxMessageBytes || prefix.type < 1 || prefix.type > 4)
    return false;
  type = static_cast<Type> (prefix.type);
  // The body grows as its bytes arrive: a prefix that claims 32 MB and
  // sends nothing costs nothing.
  constexpr size_t kStep = 1 << 20;
  body.clear ();
  while (body.size () < prefix.length) {
    const size_t at = body.size (), n = std::min<size_t> (kStep, prefix.length - at);
    body.resize (at + n);
    if (!read_all (fd, body.data () + at, n))
      return false;
  }
  return true;
}

} // namespace livemicro::orchestrator::wire
