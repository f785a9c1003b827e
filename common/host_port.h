// "HOST:PORT" listen addresses of the daemons' flags (--metrics-listen, --health-listen).
#pragma once

#include <string>

namespace dtm {

// Splits "host:port" (IPv6 hosts in brackets: "[::1]:9100"); port 0 asks for a free one. False when
// there is no colon or the port is not a number in 0..65535.
bool SplitHostPort(const std::string& address, std::string* host, int* port);

}  // namespace dtm
