// libwebp's simple decoding API (pkg-config libwebp; Debian: libwebp-dev).
#include <webp/decode.h>
