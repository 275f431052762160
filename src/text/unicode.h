// UTF-8 helpers and the GPT-2 byte<->unicode map shared by the tokenizers (internal).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ao::text::detail {

// Length of the UTF-8 sequence that starts with byte `c` (1 for invalid lead bytes).
inline size_t utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

// Length of the code point at s[pos], clipped to the end of s; a truncated or malformed
// sequence counts as one byte so that every byte is covered exactly once.
size_t utf8_char_len(std::string_view s, size_t pos);

// Appends the UTF-8 encoding of code point `cp`.
void append_utf8(std::string& out, uint32_t cp);

// Number of leading bytes of `s` that form complete UTF-8 sequences; a trailing sequence
// that may still be completed by more bytes is left out.
size_t utf8_complete_prefix(std::string_view s);

// Replaces malformed UTF-8 by U+FFFD.
std::string utf8_sanitize(std::string_view s);

// GPT-2 byte-level map: byte -> code point (printable stand-in) and back.
const std::array<std::string, 256>& byte_to_unicode();
// Decodes a byte-level string (as stored in GPT-2 style vocabularies) back to bytes. Code
// points outside the map are kept as their UTF-8 text. Returns false if any was outside.
bool unicode_to_bytes(std::string_view s, std::string& out);

// "<0xNN>" -> NN, or -1.
int parse_byte_piece(std::string_view piece);

inline constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 '▁'

// Unicode normalization forms and lowercasing (through ICU); malformed UTF-8 becomes U+FFFD.
enum class UnicodeForm { nfc, nfd, nfkc, nfkd, lowercase };
std::string unicode_normalize(const std::string& s, UnicodeForm form);

std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

}  // namespace ao::text::detail
