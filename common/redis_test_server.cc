#include "common/redis_test_server.h"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

namespace dtm {

namespace {

constexpr auto kReadyTimeout = std::chrono::seconds(10);
constexpr auto kStopTimeout = std::chrono::seconds(10);

std::string FindBinary() {
  if (const char* env = std::getenv("DTM_REDIS_SERVER"); env != nullptr && *env != '\0') return env;
  if (access("/usr/bin/redis-server", X_OK) == 0) return "/usr/bin/redis-server";
  if (const char* path = std::getenv("PATH")) {
    std::string dirs = path;
    size_t start = 0;
    while (start <= dirs.size()) {
      const size_t end = std::min(dirs.find(':', start), dirs.size());
      const std::string candidate = dirs.substr(start, end - start) + "/redis-server";
      if (end > start && access(candidate.c_str(), X_OK) == 0) return candidate;
      start = end + 1;
    }
  }
  return "";
}

// A loopback port that the kernel just had free. Another process may take it before redis-server
// binds it; Start() then fails, which a test reports rather than hangs on.
StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return InternalError("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  close(fd);
  if (!ok) return InternalError("cannot bind a free loopback port");
  return static_cast<int>(ntohs(addr.sin_port));
}

StatusOr<std::string> MakeTempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/dtm-redis-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) return InternalError("mkdtemp failed for " + templ);
  return templ;
}

// True once a PING on 127.0.0.1:port gets PONG, or NOAUTH from a server with a password: either
// means it has loaded its data (a restarting server answers LOADING until then).
bool Pongs(int port) {
  timeval timeout{0, 200 * 1000};
  redisContext* context = redisConnectWithTimeout("127.0.0.1", port, timeout);
  if (context == nullptr) return false;
  bool pong = false;
  if (context->err == 0) {
    redisSetTimeout(context, timeout);
    auto* reply = static_cast<redisReply*>(redisCommand(context, "PING"));
    pong =
        reply != nullptr &&
        (reply->type == REDIS_REPLY_STATUS ||
         (reply->type == REDIS_REPLY_ERROR && std::string(reply->str, reply->len).rfind("NOAUTH", 0) == 0));
    if (reply != nullptr) freeReplyObject(reply);
  }
  redisFree(context);
  return pong;
}

}  // namespace

StatusOr<std::unique_ptr<RedisTestServer>> RedisTestServer::Start(std::vector<std::string> extra_args) {
  std::string binary = FindBinary();
  if (binary.empty()) return FailedPreconditionError("no redis-server binary (set DTM_REDIS_SERVER)");
  ASSIGN_OR_RETURN(int port, FreeLoopbackPort());
  ASSIGN_OR_RETURN(std::string dir, MakeTempDir());
  std::unique_ptr<RedisTestServer> server(
      new RedisTestServer(std::move(binary), std::move(dir), port, std::move(extra_args)));
  RETURN_IF_ERROR(server->Restart());
  return server;
}

RedisTestServer::~RedisTestServer() {
  Kill();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string RedisTestServer::url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

Status RedisTestServer::Restart() {
  if (pid_ > 0) Stop();
  RETURN_IF_ERROR(Launch());
  return WaitUntilReady();
}

Status RedisTestServer::Launch() {
  const std::string port = std::to_string(port_);
  const std::string log = dir_ + "/redis.log";
  std::vector<std::string> args = {binary_, "--port",       port,  "--bind",        "127.0.0.1", "--save",
                                   "",      "--appendonly", "yes", "--appendfsync", "always",    "--dir",
                                   dir_,    "--logfile",    log,   "--daemonize",   "no"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return InternalError("fork failed");
  if (pid == 0) {
    // A test that crashes must not leave its server running.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  return OkStatus();
}

Status RedisTestServer::WaitUntilReady() {
  const auto deadline = std::chrono::steady_clock::now() + kReadyTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (Pongs(port_)) return OkStatus();
    int wstatus = 0;
    if (waitpid(pid_, &wstatus, WNOHANG) == pid_) {
      pid_ = -1;
      return UnavailableError("redis-server on port " + std::to_string(port_) + " exited early; see " + dir_ +
                              "/redis.log");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return UnavailableError("redis-server on port " + std::to_string(port_) + " did not answer PING in time");
}

void RedisTestServer::Stop() { Signal(SIGTERM); }

void RedisTestServer::Kill() { Signal(SIGKILL); }

void RedisTestServer::Signal(int signal) {
  if (pid_ <= 0) return;
  kill(pid_, signal);
  // A graceful shutdown that hangs is finished off, so a test never waits forever.
  const auto deadline = std::chrono::steady_clock::now() + kStopTimeout;
  while (waitpid(pid_, nullptr, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
}

}  // namespace dtm
