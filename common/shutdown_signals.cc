#include "common/shutdown_signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>

namespace dtm {
namespace {

int g_pipe[2] = {-1, -1};

void OnSignal(int signal) {
  const int saved_errno = errno;
  const unsigned char byte = static_cast<unsigned char>(signal);
  // A full pipe drops the byte: a hundred pending signals say no more than one.
  (void)!write(g_pipe[1], &byte, 1);
  errno = saved_errno;
}

void WriteByte(unsigned char byte) { (void)!write(g_pipe[1], &byte, 1); }

}  // namespace

void ShutdownSignals::Install() {
  if (g_pipe[0] >= 0) return;
  if (pipe2(g_pipe, O_CLOEXEC) != 0) std::abort();
  fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int ShutdownSignals::Wait() {
  unsigned char byte = 0;
  for (;;) {
    const ssize_t n = read(g_pipe[0], &byte, 1);
    if (n == 1) return byte;
    if (n < 0 && errno == EINTR) continue;
    return 0;
  }
}

void ShutdownSignals::Wake() { WriteByte(0); }

}  // namespace dtm
