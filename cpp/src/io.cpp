// load_network: the .npz files of python/fastmlp/io.py, read with every size checked.
//
// Layers of the reader, each checking what it reads against what holds it:
//   read_regular_file  the bytes of a regular file
//   zip_members        the zip's central directory: stored members within the file, CRC-32 checked
//   parse_npy          each member's .npy header: dtype, order, shape, and exactly that many bytes
//   parse_json         the __fastmlp__ metadata (a bounded-depth JSON parser)
//   network_file / estimator_file   the metadata against the arrays, as python/fastmlp/io.py checks them
#include "fastmlp/io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <stdexcept>
#include <utility>

namespace fastmlp {
namespace {

using Bytes = std::vector<std::uint8_t>;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

// ------------------------------------------------------------------ the file
Bytes read_regular_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(std::string("cannot open: ") + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) fail(std::string("cannot stat: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail("is a directory");
  if (!S_ISREG(st.st_mode))
    fail("is not a regular file (a device, FIFO or socket): models are read from regular files");
  const std::size_t size = std::size_t(st.st_size);
  Bytes bytes(size);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t got = ::read(fd, bytes.data() + done, size - done);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(std::string("read error: ") + std::strerror(errno));
    if (got == 0) fail("the file shrank while being read");
    done += std::size_t(got);
  }
  return bytes;
}

// Little-endian integers at `at`, which the caller has checked lie within the buffer.
std::uint64_t le(const std::uint8_t* at, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | at[i];
  return v;
}

// --------------------------------------------------------------------- zip
std::uint32_t crc32(const std::uint8_t* data, std::size_t n) {
  // The zip format's CRC-32 (reflected polynomial 0xEDB88320), one table built once.
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

struct Member {
  std::string name;
  const std::uint8_t* data;
  std::size_t size;
};

// The members of the zip archive `file`, as np.savez writes it: stored (not
// compressed), each within the file before the central directory, CRC-32 checked.
// Sizes and offsets may be in a Zip64 extra field (NumPy writes its members with
// force_zip64); a Zip64 central directory (an archive over 4 GiB) is refused.
std::vector<Member> zip_members(const Bytes& file) {
  const std::size_t n = file.size();
  const std::uint8_t* b = file.data();
  if (n < 22) fail("not a zip archive (too short)");
  std::size_t eocd = n;  // the end-of-central-directory record: the last signature, its comment within the file
  for (std::size_t at = n - 22 + 1; at-- > 0 && n - at <= 22 + 0xFFFF;) {
    if (le(b + at, 4) == 0x06054b50 && at + 22 + le(b + at + 20, 2) == n) {
      eocd = at;
      break;
    }
  }
  if (eocd == n) fail("not a zip archive (no end-of-central-directory record)");
  const std::uint64_t count = le(b + eocd + 10, 2), cd_size = le(b + eocd + 12, 4), cd_offset = le(b + eocd + 16, 4);
  if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF)
    fail("a Zip64 archive (over 4 GiB or 65535 members) is not supported");
  if (le(b + eocd + 4, 4) != 0 || le(b + eocd + 8, 2) != count) fail("a multi-disk zip archive is not supported");
  if (cd_offset + cd_size > eocd) fail("the central directory lies outside the file");
  std::vector<Member> members;
  std::size_t at = std::size_t(cd_offset);
  const std::size_t cd_end = std::size_t(cd_offset + cd_size);
  for (std::uint64_t i = 0; i < count; ++i) {
    if (at + 46 > cd_end || le(b + at, 4) != 0x02014b50) fail("damaged central directory");
    const std::uint64_t flags = le(b + at + 8, 2), method = le(b + at + 10, 2), crc = le(b + at + 16, 4);
    std::uint64_t packed = le(b + at + 20, 4), size = le(b + at + 24, 4), offset = le(b + at + 42, 4);
    const std::size_t name_len = le(b + at + 28, 2), extra_len = le(b + at + 30, 2), comment_len = le(b + at + 32, 2);
    if (at + 46 + name_len + extra_len + comment_len > cd_end) fail("damaged central directory");
    std::string name(reinterpret_cast<const char*>(b + at + 46), name_len);
    // Zip64 extra field (id 1): the 8-byte values of the fields saturated at 0xFFFFFFFF, in this order.
    for (std::size_t e = at + 46 + name_len, end = e + extra_len; e + 4 <= end;) {
      const std::size_t id = le(b + e, 2), len = le(b + e + 2, 2);
      if (e + 4 + len > end) fail("damaged extra field of member '" + name + "'");
      if (id == 1) {
        std::size_t k = e + 4;
        for (std::uint64_t* field : {&size, &packed, &offset}) {
          if (*field != 0xFFFFFFFF) continue;
          if (k + 8 > e + 4 + len) fail("damaged Zip64 field of member '" + name + "'");
          *field = le(b + k, 8);
          k += 8;
        }
      }
      e += 4 + len;
    }
    if (flags & 1) fail("member '" + name + "' is encrypted");
    if (method != 0)
      fail("member '" + name + "' is compressed (method " + std::to_string(method) +
           "); fastmlp writes stored members (np.savez), not np.savez_compressed");
    if (packed != size)
      fail("member '" + name + "' declares " + std::to_string(size) + " bytes but stores " + std::to_string(packed));
    // The local header: its own name and extra field lengths, then the data, all before the directory.
    if (offset + 30 > cd_offset || le(b + offset, 4) != 0x04034b50) fail("damaged local header of '" + name + "'");
    const std::uint64_t data_at = offset + 30 + le(b + offset + 26, 2) + le(b + offset + 28, 2);
    if (data_at > cd_offset || size > cd_offset - data_at)
      fail("member '" + name + "' declares " + std::to_string(size) + " bytes at offset " + std::to_string(data_at) +
           ", beyond the file's " + std::to_string(n) + " bytes");
    if (crc32(b + data_at, std::size_t(size)) != crc) fail("member '" + name + "' is damaged (CRC-32 mismatch)");
    members.push_back({std::move(name), b + data_at, std::size_t(size)});
    at += 46 + name_len + extra_len + comment_len;
  }
  return members;
}

// --------------------------------------------------------------------- npy
struct Array {
  std::string name;
  char kind = 0;              // 'f' float, 'i' signed, 'u' unsigned, 'b' bool, 'U' UTF-32 text
  std::size_t itemsize = 0;   // bytes per element (text: 4 × characters)
  std::vector<Index> shape;   // () for a 0-d array
  bool fortran = false;
  const std::uint8_t* data = nullptr;
  std::size_t count = 0;      // elements

  double number(std::size_t i) const {  // element i (in storage order) of a numeric array as double
    const std::uint8_t* p = data + i * itemsize;
    switch (kind) {
      case 'f':
        if (itemsize == 4) {
          const auto bits = std::uint32_t(le(p, 4));
          float v;
          std::memcpy(&v, &bits, 4);
          return v;
        } else {
          const std::uint64_t bits = le(p, 8);
          double v;
          std::memcpy(&v, &bits, 8);
          return v;
        }
      case 'i': {
        const std::uint64_t u = le(p, int(itemsize));
        const int shift = 64 - 8 * int(itemsize);
        return double(std::int64_t(u << shift) >> shift);  // sign-extended
      }
      default:  // 'u', 'b'
        return double(le(p, int(itemsize)));
    }
  }
  std::string text(std::size_t i) const;  // element i of a 'U' array as UTF-8
};

void append_utf8(std::string& out, std::uint32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x110000) {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    fail("text holds an invalid code point");
  }
}

std::string Array::text(std::size_t i) const {
  std::string out;
  const std::uint8_t* p = data + i * itemsize;
  for (std::size_t k = 0; k < itemsize / 4; ++k) {
    const auto c = std::uint32_t(le(p + 4 * k, 4));
    if (c == 0) break;  // NumPy pads with NULs
    append_utf8(out, c);
  }
  return out;
}

// The header dict of a .npy file, e.g. {'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }:
// a Python literal with exactly these three keys.
struct HeaderParser {
  const std::string& s;
  std::size_t i = 0;
  void space() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n')) ++i;
  }
  bool eat(char c) {
    space();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("bad .npy header: expected '") + c + "' in " + s);
  }
  std::string quoted() {
    space();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail("bad .npy header: expected a string in " + s);
    const char q = s[i++];
    const std::size_t end = s.find(q, i);
    if (end == std::string::npos) fail("bad .npy header: unterminated string");
    std::string out = s.substr(i, end - i);
    i = end + 1;
    return out;
  }
  bool boolean() {
    space();
    for (const char* word : {"True", "False"}) {
      if (s.compare(i, std::strlen(word), word) == 0) return i += std::strlen(word), word[0] == 'T';
    }
    fail("bad .npy header: expected True or False in " + s);
  }
  std::vector<Index> shape() {
    std::vector<Index> out;
    expect('(');
    while (!eat(')')) {
      space();
      Index v = 0;
      std::size_t digits = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        if (v > (std::numeric_limits<Index>::max() - 9) / 10) fail("bad .npy header: a dimension overflows");
        v = 10 * v + (s[i++] - '0');
        ++digits;
      }
      if (digits == 0) fail("bad .npy header: expected a dimension in " + s);
      out.push_back(v);
      if (!eat(',')) {
        expect(')');
        break;
      }
    }
    return out;
  }
};

Array parse_npy(const Member& m) {
  if (m.name.size() <= 4 || m.name.compare(m.name.size() - 4, 4, ".npy") != 0)
    fail("unexpected member '" + m.name + "' (not a .npy)");
  Array a;
  a.name = m.name.substr(0, m.name.size() - 4);
  static const char magic[] = "\x93NUMPY";
  if (m.size < 10 || std::memcmp(m.data, magic, 6) != 0) fail("member '" + m.name + "' is not a .npy array");
  const int major = m.data[6];
  std::size_t header_len, header_at;
  if (major == 1) {
    header_len = le(m.data + 8, 2), header_at = 10;
  } else if (major == 2 || major == 3) {
    if (m.size < 12) fail("member '" + m.name + "' is truncated");
    header_len = le(m.data + 8, 4), header_at = 12;
  } else {
    fail("member '" + m.name + "' has .npy version " + std::to_string(major));
  }
  if (header_len > m.size - header_at) fail("member '" + m.name + "': its header runs past its end");
  const std::string header(reinterpret_cast<const char*>(m.data + header_at), header_len);
  HeaderParser p{header};
  std::string descr;
  bool have_descr = false, have_order = false, have_shape = false;
  p.expect('{');
  while (!p.eat('}')) {
    const std::string key = p.quoted();
    p.expect(':');
    if (key == "descr" && !have_descr) {
      descr = p.quoted(), have_descr = true;
    } else if (key == "fortran_order" && !have_order) {
      a.fortran = p.boolean(), have_order = true;
    } else if (key == "shape" && !have_shape) {
      a.shape = p.shape(), have_shape = true;
    } else {
      fail("member '" + m.name + "': unexpected .npy header key '" + key + "'");
    }
    if (!p.eat(',')) {
      p.expect('}');
      break;
    }
  }
  if (!(have_descr && have_order && have_shape)) fail("member '" + m.name + "': incomplete .npy header");
  // '<' little-endian, '|' not applicable (one byte); big-endian data is not what NumPy writes here.
  if (descr.size() < 3 || (descr[0] != '<' && descr[0] != '|'))
    fail("member '" + m.name + "' has dtype '" + descr + "'; expected little-endian numbers or text");
  a.kind = descr[1];
  const std::string digits = descr.substr(2);
  if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos)
    fail("member '" + m.name + "' has dtype '" + descr + "'");
  const std::size_t size = std::stoul(digits);
  const bool ok = (a.kind == 'f' && (size == 4 || size == 8)) ||
                  ((a.kind == 'i' || a.kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
                  (a.kind == 'b' && size == 1) || (a.kind == 'U' && size >= 1);
  if (!ok) fail("member '" + m.name + "' has dtype '" + descr + "'; expected numbers or text");
  a.itemsize = a.kind == 'U' ? 4 * size : size;
  // Exactly the bytes the header declares, counted without overflow.
  const std::size_t data_bytes = m.size - header_at - header_len;
  std::size_t count = 1;
  for (const Index d : a.shape) {
    if (d != 0 && count > data_bytes / std::size_t(d))
      count = data_bytes + 1;  // more than the member holds
    else
      count *= std::size_t(d);
  }
  if (count > data_bytes || count * a.itemsize != data_bytes)
    fail("member '" + m.name + "' declares " + std::to_string(a.shape.size()) + "-d " + descr +
         " data that is not the " + std::to_string(data_bytes) + " bytes it holds");
  a.count = count;
  a.data = m.data + header_at + header_len;
  return a;
}

// -------------------------------------------------------------------- JSON
struct Json {
  enum Kind { Null, Bool, Number, String, List, Object } kind = Null;
  bool boolean = false;
  double number = 0;
  bool integer = false;  // a number written without fraction or exponent
  std::string text;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  const Json* find(const std::string& key) const {
    for (const auto& [k, v] : members)
      if (k == key) return &v;
    return nullptr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}
  Json document() {
    Json v = value(0);
    space();
    if (i_ != s_.size()) fail("metadata: trailing characters after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 64;  // a forged file cannot exhaust the stack
  const std::string& s_;
  std::size_t i_ = 0;

  void space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool word(const char* w) {
    const std::size_t n = std::strlen(w);
    if (s_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }
  [[noreturn]] void bad(const char* what) { fail(std::string("metadata: invalid JSON (") + what + ")"); }

  Json value(int depth) {
    if (depth > kMaxDepth) bad("nested too deeply");
    space();
    if (i_ >= s_.size()) bad("unexpected end");
    Json v;
    const char c = s_[i_];
    if (c == '{') {
      v.kind = Json::Object;
      ++i_;
      space();
      if (i_ < s_.size() && s_[i_] == '}') return ++i_, v;
      for (;;) {
        space();
        if (i_ >= s_.size() || s_[i_] != '"') bad("expected a key");
        std::string key = string();
        space();
        if (i_ >= s_.size() || s_[i_++] != ':') bad("expected ':'");
        v.members.emplace_back(std::move(key), value(depth + 1));
        space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') return ++i_, v;
        bad("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Json::List;
      ++i_;
      space();
      if (i_ < s_.size() && s_[i_] == ']') return ++i_, v;
      for (;;) {
        v.items.push_back(value(depth + 1));
        space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') return ++i_, v;
        bad("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Json::String;
      v.text = string();
      return v;
    }
    if (word("true") || word("false")) {
      v.kind = Json::Bool;
      v.boolean = c == 't';
      return v;
    }
    if (word("null")) return v;
    // Python's json writes NaN, Infinity and -Infinity (an estimator's best_loss_ = inf).
    v.kind = Json::Number;
    if (word("NaN")) return v.number = std::numeric_limits<double>::quiet_NaN(), v;
    if (word("Infinity")) return v.number = std::numeric_limits<double>::infinity(), v;
    if (word("-Infinity")) return v.number = -std::numeric_limits<double>::infinity(), v;
    const std::size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    bool fraction = false, digits = false;
    while (i_ < s_.size()) {
      const char d = s_[i_];
      if (d >= '0' && d <= '9') {
        digits = true;
      } else if (d == '.' || d == 'e' || d == 'E' || ((d == '+' || d == '-') && (s_[i_ - 1] | 0x20) == 'e')) {
        fraction = true;
      } else {
        break;
      }
      ++i_;
    }
    if (!digits) bad("unexpected character");
    const std::string literal = s_.substr(start, i_ - start);
    char* end = nullptr;
    v.number = std::strtod(literal.c_str(), &end);
    if (end != literal.c_str() + literal.size()) bad("malformed number");
    v.integer = !fraction;
    return v;
  }

  std::uint32_t hex4() {
    if (i_ + 4 > s_.size()) bad("truncated \\u escape");
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      v <<= 4;
      if (h >= '0' && h <= '9')
        v |= std::uint32_t(h - '0');
      else if ((h | 0x20) >= 'a' && (h | 0x20) <= 'f')
        v |= std::uint32_t((h | 0x20) - 'a' + 10);
      else
        bad("malformed \\u escape");
    }
    return v;
  }

  std::string string() {
    ++i_;  // the opening quote
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) bad("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) bad("unterminated string");
      const char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/': out += e; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i_ + 1 < s_.size() && s_[i_] == '\\' && s_[i_ + 1] == 'u') {
            i_ += 2;
            const std::uint32_t low = hex4();
            if (low < 0xDC00 || low >= 0xE000) bad("unpaired surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: bad("unknown escape");
      }
    }
  }
};

// ------------------------------------------------------ metadata, checked
const Json& need(const Json& object, const std::string& key) {
  const Json* v = object.kind == Json::Object ? object.find(key) : nullptr;
  if (v == nullptr) fail("metadata: missing '" + key + "'");
  return *v;
}

std::string need_text(const Json& v, const std::string& what) {
  if (v.kind != Json::String) fail("metadata: " + what + " must be a string");
  return v.text;
}

Index need_int(const Json& v, const std::string& what, Index minimum) {
  if (v.kind != Json::Number || !v.integer || !(v.number >= double(minimum)) || v.number > 9007199254740992.0)
    fail("metadata: " + what + " must be an integer >= " + std::to_string(minimum));
  return Index(v.number);
}

double need_number(const Json& v, const std::string& what) {
  if (v.kind != Json::Number || !std::isfinite(v.number)) fail("metadata: " + what + " must be a finite number");
  return v.number;
}

// A typed parameter value (io.py's version 2): {"tuple": [...]} is the list it holds.
const Json& untyped(const Json& v) {
  if (v.kind == Json::Object && v.members.size() == 1 && v.members[0].first == "tuple" &&
      v.members[0].second.kind == Json::List)
    return v.members[0].second;
  return v;
}

// The hidden activations: one name for all hidden layers, or one per hidden layer.
std::vector<Activation> hidden_activations(const Json& spec, Index n_hidden) {
  const Json& v = untyped(spec);
  if (v.kind == Json::String) return {parse_activation(v.text)};
  if (v.kind == Json::List && v.items.empty() && n_hidden == 0) return {Activation::Relu};  // no hidden layer
  if (v.kind != Json::List || Index(v.items.size()) != n_hidden)
    fail("metadata: activation must be a name or a list of one per hidden layer (" + std::to_string(n_hidden) + ")");
  std::vector<Activation> out;
  for (const Json& a : v.items) out.push_back(parse_activation(need_text(a, "activation")));
  return out;
}

// What the network is made of, read from either format; the parameters in the
// Network's flat layout (W_0, b_0, W_1, b_1, ...) as double.
struct Model {
  SavedModel info;
  std::vector<Index> sizes;  // a network of layers: {n_inputs}
  std::vector<Activation> hidden;
  std::vector<LayerSpec> layers;  // a network of layers (Python's config["layers"])
  bool layered = false;
  Activation output = Activation::Identity;
  double slope = 0.01;
  std::vector<double> params, state;
};

// A list of layers from its JSON form (fastmlp.layers.to_spec); the Network checks the values.
std::vector<LayerSpec> layer_specs(const Json& list, int depth = 0) {
  if (list.kind != Json::List || depth > 64) fail("metadata: layers must be a list of layer objects");
  std::vector<LayerSpec> out;
  const auto ints = [](const Json* v, const char* what) {
    std::vector<Index> values;
    if (v == nullptr || v->kind != Json::List)
      fail(std::string("metadata: an embedding's ") + what + " must be a list");
    for (const Json& x : v->items) values.push_back(need_int(x, what, 0));
    return values;
  };
  for (const Json& item : list.items) {
    if (item.kind != Json::Object) fail("metadata: a layer must be a JSON object");
    LayerSpec spec;
    spec.kind = parse_layer_kind(need_text(need(item, "kind"), "kind"));
    if (const Json* v = item.find("units")) spec.units = need_int(*v, "units", 1);
    if (const Json* v = item.find("name")) spec.activation = parse_activation(need_text(*v, "name"));
    if (const Json* v = item.find("rate")) spec.rate = need_number(*v, "rate");
    if (const Json* v = item.find("momentum")) spec.momentum = need_number(*v, "momentum");
    if (const Json* v = item.find("eps")) spec.eps = need_number(*v, "eps");
    if (const Json* v = item.find("layers")) spec.layers = layer_specs(*v, depth + 1);
    if (spec.kind == LayerKind::Embedding) {
      spec.columns = ints(item.find("columns"), "columns");
      spec.cardinalities = ints(item.find("cardinalities"), "cardinalities");
      spec.dims = ints(item.find("dims"), "dims");
    }
    out.push_back(std::move(spec));
  }
  return out;
}

// The parameter and state counts of `layers` on `width` inputs (width: updated to the output's),
// refusing (before any allocation) more than `limit` values; the Network checks the rest.
void count_layers(const std::vector<LayerSpec>& layers, Index& width, std::size_t limit, std::size_t& params,
                  std::size_t& state) {
  const auto add = [&](std::size_t& total, double n) {
    if (n > double(limit) || double(total) + n > double(limit))
      fail("metadata: the layers imply more parameters than the file holds");
    total += std::size_t(n);
  };
  for (const LayerSpec& spec : layers) {
    switch (spec.kind) {
      case LayerKind::Dense:
        add(params, double(width) * double(spec.units) + double(spec.units));
        width = spec.units;
        break;
      case LayerKind::BatchNorm: add(state, 2.0 * double(width)); [[fallthrough]];
      case LayerKind::LayerNorm: add(params, 2.0 * double(width)); break;
      case LayerKind::Residual: {
        Index inner = width;
        count_layers(spec.layers, inner, limit, params, state);
        break;
      }
      case LayerKind::Embedding:
        for (std::size_t j = 0; j < spec.cardinalities.size() && j < spec.dims.size(); ++j) {
          add(params, double(spec.cardinalities[j]) * double(spec.dims[j]));
          width += spec.dims[j] - 1;
        }
        break;
      default: break;
    }
  }
}

std::string dtype_of(const Array& a) { return a.itemsize == 4 ? "float32" : "float64"; }

// Copies the 2-D (or 1-D) float array `a`, in C order, into `out`.
void copy_values(const Array& a, double* out) {
  if (a.fortran && a.shape.size() == 2) {
    const std::size_t rows = std::size_t(a.shape[0]), cols = std::size_t(a.shape[1]);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < cols; ++c) out[r * cols + c] = a.number(c * rows + r);
  } else {
    for (std::size_t i = 0; i < a.count; ++i) out[i] = a.number(i);
  }
}

Index count_params(const std::vector<Index>& sizes, std::size_t limit) {
  // Σ n_in·n_out + n_out, refusing (before any allocation) more than `limit` values.
  std::size_t total = 0;
  for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
    const std::size_t a = std::size_t(sizes[l]), b = std::size_t(sizes[l + 1]);
    if (a > limit || b > limit || (a != 0 && b > limit / a) || total + a * b + b > limit)
      fail("metadata: layer sizes imply more parameters than the file holds");
    total += a * b + b;
  }
  return Index(total);
}

void network_file(const Json& meta, const std::map<std::string, Array>& arrays, Model& m) {
  if (need_int(need(meta, "version"), "version", 0) != 1)
    fail("format version " + std::to_string(need_int(need(meta, "version"), "version", 0)) + "; this fastmlp reads 1");
  const bool with_state = arrays.size() == 3 && arrays.count("state") == 1;
  if ((arrays.size() != 2 && !with_state) || arrays.count("params") == 0)
    fail("a network file holds exactly the arrays __fastmlp__, params (and state)");
  const Array& params = arrays.at("params");
  const Json& config = need(meta, "config");
  if (const Json* layers = config.find("layers")) {  // a network of layers
    m.layered = true;
    m.sizes = {need_int(need(meta, "layer_sizes"), "layer_sizes (the input size)", 1)};
    m.layers = layer_specs(*layers);
    m.info.dtype = need_text(need(meta, "dtype"), "dtype");
    if (m.info.dtype != "float32" && m.info.dtype != "float64") fail("metadata: dtype must be float32 or float64");
    m.output = parse_activation(need_text(need(config, "output_activation"), "output_activation"));
    m.slope = need_number(need(config, "leaky_relu_slope"), "leaky_relu_slope");
    Index width = m.sizes[0];
    std::size_t n = 0, k = 0;
    count_layers(m.layers, width, params.count + (with_state ? arrays.at("state").count : 0), n, k);
    for (const auto& [name, count] : {std::pair<std::string, std::size_t>{"params", n}, {"state", k}}) {
      if (count == 0 && name == "state") {
        if (with_state) fail("state must be absent: the layers have no state");
        continue;
      }
      if (name == "state" && !with_state) fail("state is missing");
      const Array& a = arrays.at(name);
      if (a.kind != 'f' || dtype_of(a) != m.info.dtype || a.shape.size() != 1 || std::size_t(a.shape[0]) != count)
        fail(name + " must be (" + std::to_string(count) + ",) of " + m.info.dtype + " (the layers')");
      std::vector<double>& dst = name == "params" ? m.params : m.state;
      dst.resize(count);
      copy_values(a, dst.data());
    }
    return;
  }
  if (with_state) fail("a network of layer_sizes holds no state array");
  const Json& sizes = need(meta, "layer_sizes");
  if (sizes.kind != Json::List || sizes.items.size() < 2) fail("metadata: layer_sizes must be a list of >= 2 sizes");
  for (const Json& s : sizes.items) m.sizes.push_back(need_int(s, "a layer size", 1));
  m.info.dtype = need_text(need(meta, "dtype"), "dtype");
  if (m.info.dtype != "float32" && m.info.dtype != "float64") fail("metadata: dtype must be float32 or float64");
  m.hidden = hidden_activations(need(config, "activation"), Index(m.sizes.size()) - 2);
  m.output = parse_activation(need_text(need(config, "output_activation"), "output_activation"));
  m.slope = need_number(need(config, "leaky_relu_slope"), "leaky_relu_slope");
  const Index n = count_params(m.sizes, params.count);
  if (params.kind != 'f' || dtype_of(params) != m.info.dtype || params.shape.size() != 1 || params.shape[0] != n)
    fail("params must be (" + std::to_string(n) + ",) of " + m.info.dtype + " (the layer sizes' parameters)");
  m.params.resize(std::size_t(n));
  copy_values(params, m.params.data());
}

void estimator_file(const Json& meta, const std::map<std::string, Array>& arrays, Model& m) {
  const Index version = need_int(need(meta, "version"), "version", 1);
  if (version == 3)
    fail(
        "format version 3 (an estimator of layers: normalization, residual or layers=) is read by Python's "
        "fastmlp.load only; save its network (est.fitted_network().save(path)) for the C++ loader");
  if (version > 3) fail("format version " + std::to_string(version) + "; this fastmlp reads up to 3: upgrade fastmlp");
  m.info.estimator = need_text(need(meta, "class"), "class");
  if (m.info.estimator != "MLPClassifier" && m.info.estimator != "MLPRegressor")
    fail("unknown estimator class '" + m.info.estimator + "'");
  const Json& params = need(meta, "params");
  const Json& attrs = need(meta, "attributes");
  if (params.kind != Json::Object || attrs.kind != Json::Object)
    fail("metadata: 'attributes' and 'params' must be JSON objects");
  // Layer sizes: n_features_in_, hidden_layer_sizes (default (100,)), n_outputs_.
  m.sizes.push_back(need_int(need(attrs, "n_features_in_"), "n_features_in_", 1));
  if (const Json* h = params.find("hidden_layer_sizes")) {
    const Json& hidden = untyped(*h);
    if (hidden.kind == Json::List) {
      for (const Json& s : hidden.items) m.sizes.push_back(need_int(s, "hidden_layer_sizes", 1));
    } else {
      m.sizes.push_back(need_int(hidden, "hidden_layer_sizes", 1));
    }
  } else {
    m.sizes.push_back(100);
  }
  m.sizes.push_back(need_int(need(attrs, "n_outputs_"), "n_outputs_", 1));
  const Json* activation = params.find("activation");
  m.hidden = activation ? hidden_activations(*activation, Index(m.sizes.size()) - 2)
                        : std::vector<Activation>{Activation::Relu};
  m.output = parse_activation(need_text(need(attrs, "out_activation_"), "out_activation_"));
  if (const Json* slope = params.find("leaky_relu_slope")) m.slope = need_number(*slope, "leaky_relu_slope");
  const Json* fit_dtype = attrs.find("_fit_dtype");
  m.info.dtype = fit_dtype ? need_text(*fit_dtype, "_fit_dtype") : "float64";
  if (m.info.dtype != "float32" && m.info.dtype != "float64") fail("metadata: _fit_dtype must be float32 or float64");
  // coefs_l (n_in, n_out) and intercepts_l (n_out,) of the fit dtype, nothing beyond the last layer.
  std::size_t limit = 0;
  for (const auto& kv : arrays) limit += kv.second.count;
  const Index n = count_params(m.sizes, limit);
  m.params.resize(std::size_t(n));
  std::size_t at = 0;
  for (std::size_t l = 0; l + 1 < m.sizes.size(); ++l) {
    const auto w = arrays.find("coefs_" + std::to_string(l)), b = arrays.find("intercepts_" + std::to_string(l));
    if (w == arrays.end() || b == arrays.end()) fail("missing array coefs_" + std::to_string(l) + " or intercepts_");
    const std::vector<Index> ws{m.sizes[l], m.sizes[l + 1]}, bs{m.sizes[l + 1]};
    for (const auto* a : {&w->second, &b->second}) {
      if (a->kind != 'f' || dtype_of(*a) != m.info.dtype || a->shape != (a == &w->second ? ws : bs))
        fail(a->name + " must be of shape (" + std::to_string(m.sizes[l]) + (a == &w->second ? ", " : "") +
             (a == &w->second ? std::to_string(m.sizes[l + 1]) : "") + ") and dtype " + m.info.dtype +
             ", as the metadata's layer sizes say");
      copy_values(*a, m.params.data() + at);
      at += a->count;
    }
  }
  if (arrays.count("coefs_" + std::to_string(m.sizes.size() - 1)))
    fail("more coefs_ arrays than the metadata's layers");
  if (m.info.estimator == "MLPClassifier") {
    const auto c = arrays.find("classes_");
    const Json* y_type = attrs.find("y_type");
    if (c == arrays.end() || y_type == nullptr || c->second.shape.size() != 1)
      fail("a classifier needs classes_ and y_type");
    m.info.y_type = need_text(*y_type, "y_type");
    const Array& classes = c->second;
    const Index k = classes.shape[0];
    const bool binary = m.info.y_type == "binary";
    if ((!binary && m.info.y_type != "multiclass" && m.info.y_type != "multilabel-indicator") || k < 1 ||
        (binary && k > 2) || m.sizes.back() != (binary ? 1 : k))
      fail(std::to_string(k) + " classes_ of y_type '" + m.info.y_type + "' do not fit " +
           std::to_string(m.sizes.back()) + " outputs");
    for (std::size_t i = 0; i < classes.count; ++i) {
      if (classes.kind == 'U') {
        m.info.classes.push_back(classes.text(i));
      } else if (classes.kind == 'b') {
        m.info.classes.push_back(classes.number(i) != 0 ? "True" : "False");
      } else if (classes.kind == 'f') {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.17g", classes.number(i));
        m.info.classes.push_back(buf);
      } else if (classes.kind == 'u' && classes.itemsize == 8) {
        m.info.classes.push_back(std::to_string(le(classes.data + 8 * i, 8)));  // beyond double's exact range
      } else if (classes.kind == 'i' && classes.itemsize == 8) {
        m.info.classes.push_back(std::to_string(std::int64_t(le(classes.data + 8 * i, 8))));
      } else {
        m.info.classes.push_back(std::to_string(std::int64_t(classes.number(i))));
      }
    }
  }
}

Model read_model(const std::string& path) {
  const Bytes file = read_regular_file(path);
  std::map<std::string, Array> arrays;
  for (const Member& member : zip_members(file)) {
    Array a = parse_npy(member);
    if (!arrays.emplace(a.name, a).second) fail("member '" + member.name + "' appears twice");
  }
  const auto meta_array = arrays.find("__fastmlp__");
  if (meta_array == arrays.end()) fail("not a fastmlp model file (no __fastmlp__ metadata)");
  const Array& text = meta_array->second;
  if (text.kind != 'U' || !text.shape.empty()) fail("__fastmlp__ must be a 0-d text array");
  const Json meta = JsonParser(text.text(0)).document();
  Model m;
  m.info.format = need_text(need(meta, "format"), "format");
  if (m.info.format == "fastmlp.network") {
    network_file(meta, arrays, m);
  } else if (m.info.format == "fastmlp.estimator") {
    estimator_file(meta, arrays, m);
  } else {
    fail("not a fastmlp model file (format '" + m.info.format + "')");
  }
  return m;
}

}  // namespace

template <class T>
std::unique_ptr<Network<T>> load_network(const std::string& path, SavedModel* info) {
  try {
    Model m = read_model(path);
    // The draw of initial weights is overwritten at once: seed and init do not matter.
    auto net = m.layered ? std::make_unique<Network<T>>(m.sizes[0], m.layers, m.output, m.slope, 0, Init::Glorot)
                         : std::make_unique<Network<T>>(m.sizes, m.hidden, m.output, m.slope, 0, Init::Glorot);
    if (Index(m.params.size()) != net->n_params() || Index(m.state.size()) != net->n_state())
      fail("the parameters do not fill the network");
    for (std::size_t i = 0; i < m.params.size(); ++i) net->params()[i] = T(m.params[i]);
    for (std::size_t i = 0; i < m.state.size(); ++i) net->state()[i] = T(m.state[i]);
    if (info != nullptr) *info = std::move(m.info);
    return net;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error("fastmlp::load_network: '" + path + "': " + e.what());
  }
}

template <class T>
void classifier_proba(const SavedModel& info, const T* out, Index n, Index n_outputs, T* proba) {
  if (info.y_type == "binary" && n_outputs == 1) {
    for (Index i = 0; i < n; ++i) proba[2 * i] = T(1) - out[i], proba[2 * i + 1] = out[i];
  } else {
    std::copy(out, out + n * n_outputs, proba);
  }
}

template std::unique_ptr<Network<float>> load_network<float>(const std::string&, SavedModel*);
template std::unique_ptr<Network<double>> load_network<double>(const std::string&, SavedModel*);
template void classifier_proba<float>(const SavedModel&, const float*, Index, Index, float*);
template void classifier_proba<double>(const SavedModel&, const double*, Index, Index, double*);

}  // namespace fastmlp
