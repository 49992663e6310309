// sluice/server/lifecycle.hpp: a server's phase, in one atomic word.
//
// Every question "is the server draining? forcing?" that a session, a
// connection or a handler asks is a load of this word; every change of phase
// is one of the transitions below, made by the server's stop_now(),
// shutdown() and destructor only.
//
//   serving ─shutdown() with drain_delay─▶ drain_announced ─delay over─▶ draining
//   serving ─shutdown()─────────────────────────────────────────────────▶ draining
//   serving, drain_announced, draining ─stop_now(), deadline, destructor─▶ forcing
//   any ─stop_now() or shutdown() saw the last session end────────────────▶ stopped
//
// What each phase tells whom:
//   drain_announced  readiness: server::draining() and request::server_draining()
//                    say true; everything else goes on, new connections included.
//   draining         the listeners are closed; every connection got drain()
//                    (see server/connection.hpp): idle ones close, busy
//                    ones answer with "Connection: close", upgraded ones run
//                    their on_drain hook.
//   forcing          sessions are cancelled through their scope: an
//                    operation_aborted a session sees from now on is the
//                    server's doing, not the peer's.
//   stopped          no session is left.
//
// Guarantees
// - The phase only moves forward. A transition to a phase at or before the
//   current one does nothing and returns false: a stop_now() during a
//   shutdown() is never undone by the shutdown's next step, and a second
//   shutdown() finds nothing to do.
// - Each predicate is true from its phase on (forcing() stays true once
//   stopped): "has the server got at least this far".
//
// Thread safety: every member may be called from any thread at any time.
//
//     sluice::server::lifecycle life;
//     life.start_draining();         // true: serving -> draining
//     life.start_forcing();          // true: draining -> forcing
//     life.start_draining();         // false: never back
//     assert(life.draining() && life.forcing());
#pragma once

#include <atomic>

namespace sluice::server {

enum class phase : unsigned char { serving, drain_announced, draining, forcing, stopped };

class lifecycle {
 public:
  phase current() const noexcept { return load(); }
  bool drain_announced() const noexcept { return load() >= phase::drain_announced; }
  bool draining() const noexcept { return load() >= phase::draining; }
  bool forcing() const noexcept { return load() >= phase::forcing; }
  bool stopped() const noexcept { return load() == phase::stopped; }

  // Each returns true if it moved the phase, false if the server was already there or beyond.
  bool announce_drain() noexcept { return advance(phase::drain_announced); }
  bool start_draining() noexcept { return advance(phase::draining); }
  bool start_forcing() noexcept { return advance(phase::forcing); }
  bool finish() noexcept { return advance(phase::stopped); }

  // Implementation
 private:
  // Acquire, pairing with the release of advance(): whoever sees a phase
  // also sees what the server did before entering it (the shutdown deadline
  // it set, the sessions it cancelled). The loads are rare (once per
  // response, per registration, per cancellation seen) and cost a plain load
  // on x86 and ARMv8.
  phase load() const noexcept { return word_.load(std::memory_order_acquire); }

  // A compare-and-swap loop rather than a store: two stoppers racing
  // (shutdown()'s drain against stop_now()'s forcing) must never move the
  // phase back. Release on success publishes what the caller did before the
  // transition (see load()); acquire with it, so that the stopper that wins
  // also sees the loser's earlier writes. A failed exchange only reloads the
  // word to compare again: relaxed.
  bool advance(phase to) noexcept {
    phase now = word_.load(std::memory_order_relaxed);
    do {
      if (now >= to) return false;
    } while (!word_.compare_exchange_weak(now, to, std::memory_order_acq_rel, std::memory_order_relaxed));
    return true;
  }

  std::atomic<phase> word_{phase::serving};
};

}  // namespace sluice::server
