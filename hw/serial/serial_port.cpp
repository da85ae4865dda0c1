#include "serial_port.h"

#include <livemicro/hw/error.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <termios.h>
#include <unistd.h>

namespace livemicro::hw::serial {

namespace {

speed_t
speed_of (int baud)
{
  switch (baud) {
  case 9600:
    return B9600;
  case 19200:
    return B19200;
  case 38400:
    return B38400;
  case 57600:
    return B57600;
  case 115200:
    return B115200;
  case 230400:
    return B230400;
  case 460800:
    return B460800;
  case 500000:
    return B500000;
  case 921600:
    return B921600;
  case 1000000:
    return B1000000;
  default:
    return B0;
  }
}

} // namespace

bool
SerialPort::valid_baud (int baud)
{
  return speed_of (baud) != B0;
}

SerialPort::SerialPort (const std::string &path, int baud) : path_ (path)
{
  speed_t speed = speed_of (baud);
  if (speed == B0)
    throw Error (ErrorKind::kUnsupported, "serial port '" + path + "': baud " + std::to_string (baud)
                                              + " is not one of 9600, 19200, 38400, 57600, "
                                                "115200, 230400, 460800, 500000, 921600, 1000000");
  fd_ = ::open (path.c_str (), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) {
    int e = errno;
    if (e == ENOENT || e == ENXIO || e == ENODEV)
      throw Error (ErrorKind::kNotFound, "serial port '" + path + "' does not exist");
    throw Error (ErrorKind::kDevice, "cannot open serial port '" + path + "': " + std::strerror (e)
                                         + (e == EACCES ? " (is the user in the dialout group?)" : ""));
  }
  if (!isatty (fd_)) {
    ::close (fd_);
    fd_ = -1;
    throw Error (ErrorKind::kUnsupported, "'" + path + "' is not a serial port");
  }
  // One owner per controller: a second process (another livemicrod, a
  // terminal program) would interleave its commands with ours.
  if (flock (fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close (fd_);
    fd_ = -1;
    throw Error (ErrorKind::kDevice, "serial port '" + path + "' is in use by another process");
  }
  struct termios t;
  if (tcgetattr (fd_, &t) != 0) {
    int e = errno;
    ::close (fd_);
    fd_ = -1;
    throw Error (ErrorKind::kDevice, "serial port '" + path + "': " + std::strerror (e));
  }
  cfmakeraw (&t);
  t.c_cflag |= CLOCAL | CREAD;
  t.c_cflag &= ~(CRTSCTS | CSTOPB | PARENB);
  t.c_iflag &= ~(IXON | IXOFF | IXANY);
  t.c_cc[VMIN] = 0;
  t.c_cc[VTIME] = 0;
  cfsetispeed (&t, speed);
  cfsetospeed (&t, speed);
  if (tcsetattr (fd_, TCSANOW, &t) != 0) {
    int e = errno;
    ::close (fd_);
    fd_ = -1;
    throw Error (ErrorKind::kDevice, "serial port '" + path + "': " + std::strerror (e));
  }
  tcflush (fd_, TCIOFLUSH); // nothing stale from a previous owner
}

SerialPort::~SerialPort ()
{
  if (fd_ >= 0)
    ::close (fd_);
}

void
SerialPort::write_all (const std::string &data)
{
  size_t done = 0;
  while (done < data.size ()) {
    ssize_t n = ::write (fd_, data.data () + done, data.size () - done);
    if (n > 0) {
      done += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EAGAIN) {
      struct pollfd p = {fd_, POLLOUT, 0};
      if (::poll (&p, 1, 1000) > 0 && !(p.revents & (POLLERR | POLLHUP)))
        continue;
      throw Error (ErrorKind::kDevice, "serial port '" + path_ + "' does not take data");
    }
    throw Error (ErrorKind::kDevice, "writing to serial port '" + path_
                                         + "': " + (n < 0 ? std::strerror (errno) : "nothing written"));
  }
}

bool
SerialPort::read_available (std::string &out, std::string &why)
{
  // A raw tty with VMIN = VTIME = 0 reads 0 bytes when nothing is there, so
  // a hang-up is told by poll (POLLHUP/POLLERR), not by read() == 0.
  char buf[512];
  for (;;) {
    struct pollfd p = {fd_, POLLIN, 0};
    int r = ::poll (&p, 1, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return true;
    bool hangup = p.revents & (POLLHUP | POLLERR | POLLNVAL);
    ssize_t n = (p.revents & POLLIN) || hangup ? ::read (fd_, buf, sizeof buf) : 0;
    if (n > 0) {
      out.append (buf, (size_t)n);
      if ((size_t)n == sizeof buf)
        continue;
      return true; // a hang-up behind the data shows on the next call
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN) && !hangup)
      return true;
    if (hangup || n < 0) {
      why = n < 0 && errno != EAGAIN ? std::string ("read failed: ") + std::strerror (errno)
                                     : "the device closed the line (unplugged or powered off)";
      return false;
    }
    return true;
  }
}

} // namespace livemicro::hw::serial
