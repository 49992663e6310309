// sluice/http/detail/field_scanner.hpp: the field-section scanner shared by headers and trailers.
//
// Streams field lines and the empty line that ends the section straight into a `fields` arena,
// validating every byte as it arrives (RFC 9112 5: CRLF only, no obs-fold, tchar names with the
// colon right after them, no control characters in values). Resumable at any byte; one scanner
// per parser, not thread-safe.
#pragma once

#include "sluice/http/detail/chars.hpp"
#include "sluice/http/error.hpp"
#include "sluice/http/fields.hpp"

#include <cstdint>

namespace sluice::http::detail {

// "No error" for the enum, which has no zero enumerator on purpose.
inline constexpr error ok{};

class field_scanner {
 public:
  enum class result : std::uint8_t { need_more, done, error };
  struct outcome {
    result res;
    const char* stop;  // first byte not consumed (the offending byte on error)
    error err;
  };

  void reset() noexcept { state_ = state::line_start; }

  // Scans [p, end) into `out`. `on_field(name, value)` returns `ok` to accept each completed
  // field or the error that rejects it. On `done`, `stop` is just past the final CRLF.
  template <class OnField>
  outcome scan(const char* p, const char* const end, fields& out, OnField&& on_field) {
    while (p < end) {
      switch (state_) {
        case state::line_start: {
          const char c = *p;
          if (c == '\r') {
            ++p;
            state_ = state::final_lf;
            break;
          }
          if (!is_tchar(c)) return {result::error, p, line_start_error(c, out.empty())};
          out.begin_field();
          state_ = state::name;
          [[fallthrough]];
        }
        case state::name: {
          const char* const run = p;
          while (p < end && is_tchar(*p)) ++p;
          out.append_pending(run, p);
          if (p == end) break;
          if (*p != ':')
            return {result::error, p,
                    is_ows(*p) ? error::whitespace_before_colon : error::invalid_header_name};
          out.end_pending_name();
          ++p;
          state_ = state::value_ows;
          [[fallthrough]];
        }
        case state::value_ows:
          while (p < end && is_ows(*p)) ++p;
          if (p == end) break;
          state_ = state::value;
          [[fallthrough]];
        case state::value: {
          const char* const run = p;
          p = skip_field_chars(p, end);
          out.append_pending(run, p);
          if (p == end) break;
          if (*p != '\r')
            return {result::error, p, *p == '\n' ? error::bare_lf : error::invalid_header_value};
          ++p;
          state_ = state::value_lf;
          break;
        }
        case state::value_lf: {
          if (*p != '\n') return {result::error, p, error::bare_cr};
          ++p;
          state_ = state::line_start;
          const fields::field f = out.commit_field();
          if (const error e = on_field(f.name, f.value); e != ok) return {result::error, p, e};
          break;
        }
        case state::final_lf:
          if (*p != '\n') return {result::error, p, error::bare_cr};
          state_ = state::line_start;
          return {result::done, p + 1, ok};
      }
    }
    return {result::need_more, p, ok};
  }

 private:
  enum class state : std::uint8_t { line_start, name, value_ows, value, value_lf, final_lf };

  static error line_start_error(char c, bool first_field) noexcept {
    if (is_ows(c)) return first_field ? error::whitespace_before_first_field : error::obs_fold;
    if (c == '\n') return error::bare_lf;
    if (c == ':') return error::empty_header_name;
    return error::invalid_header_name;
  }

  state state_ = state::line_start;
};

}  // namespace sluice::http::detail
