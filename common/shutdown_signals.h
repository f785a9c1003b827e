// SIGTERM and SIGINT as a blocking Wait() for the daemons' drain logic.
//
// Why not sigwait: it needs the signals blocked in every thread, but libraries start threads before
// main (OpenBLAS's pool in the worker), and a thread that does not block SIGTERM takes its default
// action, killing the process mid-task. A process-wide handler runs on whichever thread receives
// the signal and only writes the signal number into a pipe (async-signal-safe); Wait() reads it.
#pragma once

namespace dtm {

class ShutdownSignals {
 public:
  // Installs the handlers for SIGTERM and SIGINT. Call once, before Wait().
  static void Install();

  // Blocks until a signal arrives or Wake() is called; returns the signal number, or 0 for Wake().
  static int Wait();

  // Makes one Wait() return 0 (e.g. when the daemon stops by itself).
  static void Wake();
};

}  // namespace dtm
