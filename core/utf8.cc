#include "core/utf8.h"

namespace retort {
namespace {

// What a lead byte allows: the sequence length and the range of the second
// byte (narrower than 80..BF where that rules out overlongs, surrogates and
// code points above U+10FFFF). len 0: not a lead byte.
struct LeadByte {
  int len;
  unsigned char lo, hi;
};

LeadByte Lead(unsigned char b0) {
  if (b0 < 0x80) return {1, 0, 0};
  if (b0 >= 0xC2 && b0 <= 0xDF) return {2, 0x80, 0xBF};
  if (b0 == 0xE0) return {3, 0xA0, 0xBF};
  if (b0 == 0xED) return {3, 0x80, 0x9F};
  if (b0 >= 0xE1 && b0 <= 0xEF) return {3, 0x80, 0xBF};
  if (b0 == 0xF0) return {4, 0x90, 0xBF};
  if (b0 == 0xF4) return {4, 0x80, 0x8F};
  if (b0 >= 0xF1 && b0 <= 0xF3) return {4, 0x80, 0xBF};
  return {0, 0, 0};
}

bool IsContinuation(unsigned char b) { return (b & 0xC0) == 0x80; }

// Number of bytes of s[i..] (at most lead.len) that fit the lead's pattern.
size_t FittingBytes(std::string_view s, size_t i, const LeadByte& lead) {
  size_t k = 1;
  for (; k < static_cast<size_t>(lead.len) && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char lo = k == 1 ? lead.lo : 0x80, hi = k == 1 ? lead.hi : 0xBF;
    if (b < lo || b > hi) break;
  }
  return k;
}

}  // namespace

int DecodeUtf8Char(std::string_view s, size_t i, char32_t* cp) {
  if (i >= s.size()) return 0;
  const auto b0 = static_cast<unsigned char>(s[i]);
  const LeadByte lead = Lead(b0);
  if (lead.len == 1) {
    *cp = b0;
    return 1;
  }
  if (lead.len == 0 || FittingBytes(s, i, lead) != static_cast<size_t>(lead.len)) return 0;
  static constexpr unsigned char kLeadMask[] = {0, 0, 0x1F, 0x0F, 0x07};
  char32_t c = b0 & kLeadMask[lead.len];
  for (int k = 1; k < lead.len; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  *cp = c;
  return lead.len;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string EncodeUtf8(std::u32string_view cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) AppendUtf8(c, &out);
  return out;
}

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

size_t ValidUtf8Prefix(std::string_view s) {
  char32_t cp;
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const int len = DecodeUtf8Char(s, i, &cp);
    if (len == 0) return i;
    i += len;
  }
  return s.size();
}

bool IsValidUtf8(std::string_view s) { return ValidUtf8Prefix(s) == s.size(); }

size_t Utf8Length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += !IsContinuation(static_cast<unsigned char>(c));
  return n;
}

size_t Utf8MaximalSubpart(std::string_view s, size_t i) {
  const LeadByte lead = Lead(static_cast<unsigned char>(s[i]));
  if (lead.len <= 1) return 1;
  return FittingBytes(s, i, lead);
}

size_t IncompleteUtf8Tail(std::string_view s) {
  // A cut-short sequence is at most 3 bytes: look for its lead among them.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t i = n - back;
    const auto b = static_cast<unsigned char>(s[i]);
    if (IsContinuation(b)) continue;
    const LeadByte lead = Lead(b);
    if (lead.len <= static_cast<int>(back)) return 0;
    return FittingBytes(s, i, lead) == back ? back : 0;
  }
  return 0;
}

size_t PrevUtf8CharStart(std::string_view s, size_t i) {
  size_t b = i - 1;
  while (b > 0 && IsContinuation(static_cast<unsigned char>(s[b]))) --b;
  return b;
}

size_t NextUtf8CharStart(std::string_view s, size_t i) {
  size_t e = i + 1;
  while (e < s.size() && IsContinuation(static_cast<unsigned char>(s[e]))) ++e;
  return e;
}

bool Utf8Reader::Next(char32_t* cp) {
  if (pos_ >= s_.size()) return false;
  const int len = DecodeUtf8Char(s_, pos_, cp);
  if (len > 0) {
    pos_ += static_cast<size_t>(len);
  } else {
    *cp = kReplacementChar;
    pos_ += Utf8MaximalSubpart(s_, pos_);
  }
  return true;
}

std::string Utf8Lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  char32_t cp;
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      out.push_back(s[i++]);
      continue;
    }
    const int len = DecodeUtf8Char(s, i, &cp);
    if (len > 0) {
      out.append(s.data() + i, static_cast<size_t>(len));
      i += static_cast<size_t>(len);
    } else {
      out.append(kReplacementUtf8);
      i += Utf8MaximalSubpart(s, i);
    }
  }
  return out;
}

std::u32string DecodeUtf8Lossy(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  Utf8Reader reader(s);
  for (char32_t c; reader.Next(&c);) out.push_back(c);
  return out;
}

}  // namespace retort
