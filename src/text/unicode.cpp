#include "text/unicode.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <unordered_map>

#include "ao/core/error.h"

namespace ao::text::detail {

size_t utf8_char_len(std::string_view s, size_t pos) {
  const size_t n = utf8_len(static_cast<unsigned char>(s[pos]));
  if (pos + n > s.size()) return 1;
  for (size_t i = 1; i < n; ++i)
    if ((static_cast<unsigned char>(s[pos + i]) & 0xC0) != 0x80) return 1;
  return n;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t utf8_complete_prefix(std::string_view s) {
  // Look back at most 3 bytes for a lead byte whose sequence is not complete yet.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const size_t need = utf8_len(c);
    if (need > back && c >= 0xC0) return n - back;  // incomplete, may still complete
    return n;
  }
  return n;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_char_len(s, i);
    const auto c = static_cast<unsigned char>(s[i]);
    if (n == 1 && c >= 0x80) {
      out += "\xEF\xBF\xBD";
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(t[b], printable ? static_cast<uint32_t>(b) : next++);
    }
    return t;
  }();
  return table;
}

bool unicode_to_bytes(std::string_view s, std::string& out) {
  static const std::unordered_map<std::string, unsigned char> inverse = [] {
    std::unordered_map<std::string, unsigned char> m;
    const auto& t = byte_to_unicode();
    for (int b = 0; b < 256; ++b) m.emplace(t[b], static_cast<unsigned char>(b));
    return m;
  }();
  bool all = true;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_char_len(s, i);
    auto it = inverse.find(std::string(s.substr(i, n)));
    if (it != inverse.end()) {
      out += static_cast<char>(it->second);
    } else {
      out.append(s.substr(i, n));
      all = false;
    }
    i += n;
  }
  return all;
}

std::string unicode_normalize(const std::string& s, UnicodeForm form) {
  icu::UnicodeString text = icu::UnicodeString::fromUTF8(s);
  UErrorCode status = U_ZERO_ERROR;
  if (form == UnicodeForm::lowercase) {
    // Character by character, without context (no final sigma), as the tokenizers library.
    icu::UnicodeString lowered;
    for (int32_t i = 0; i < text.length();) {
      const UChar32 c = text.char32At(i);
      icu::UnicodeString one(c);
      lowered += one.toLower(icu::Locale::getRoot());
      i += U16_LENGTH(c);
    }
    text = lowered;
  } else {
    const icu::Normalizer2* n = nullptr;
    switch (form) {
      case UnicodeForm::nfc:
        n = icu::Normalizer2::getNFCInstance(status);
        break;
      case UnicodeForm::nfd:
        n = icu::Normalizer2::getNFDInstance(status);
        break;
      case UnicodeForm::nfkc:
        n = icu::Normalizer2::getNFKCInstance(status);
        break;
      default:
        n = icu::Normalizer2::getNFKDInstance(status);
        break;
    }
    AO_CHECK(U_SUCCESS(status), "Unicode normalizer unavailable: {}", u_errorName(status));
    text = n->normalize(text, status);
    AO_CHECK(U_SUCCESS(status), "Unicode normalization failed: {}", u_errorName(status));
  }
  std::string result;
  text.toUTF8String(result);
  return result;
}

int parse_byte_piece(std::string_view p) {
  if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(p[3]), lo = hex(p[4]);
  if (hi < 0 || lo < 0) return -1;
  return hi * 16 + lo;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  if (from.empty()) return std::string(s);
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

}  // namespace ao::text::detail
