// A serial port (RS-232, USB-serial adapter, or a pseudo-terminal in tests)
// opened raw, 8N1, without flow control, non-blocking.
#pragma once

#include <string>

namespace livemicro::hw::serial {

class SerialPort {
public:
  // Throws Error(kNotFound) when the path does not exist, Error(kDevice) when
  // it cannot be opened (permissions, in use by another process), and
  // Error(kUnsupported) for a baud rate termios does not know or a path that
  // is not a terminal.
  SerialPort (const std::string &path, int baud);
  ~SerialPort ();
  SerialPort (const SerialPort &) = delete;
  SerialPort &operator= (const SerialPort &) = delete;

  int fd () const { return fd_; }
  const std::string &path () const { return path_; }
  // Writes everything (waiting for the driver's buffer when it is full);
  // throws Error(kDevice) when the device went away.
  void write_all (const std::string &data);
  // Appends what is available now to `out`.  Returns false when the device
  // is gone (hang-up, end of file, I/O error), with the reason in `why`.
  bool read_available (std::string &out, std::string &why);

  // The standard rates termios offers (9600 … 1000000).
  static bool valid_baud (int baud);

private:
  std::string path_;
  int fd_ = -1;
};

} // namespace livemicro::hw::serial
