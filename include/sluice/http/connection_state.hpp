// sluice/http/connection_state.hpp: the HTTP server's names for the
// protocol-neutral connection states of server/connection_state.hpp.
#pragma once

#include "sluice/server/connection_state.hpp"

namespace sluice::http {

using ::sluice::server::connection_state;
using ::sluice::server::connection_state_count;
using ::sluice::server::state_counts;
using ::sluice::server::to_string;

}  // namespace sluice::http
