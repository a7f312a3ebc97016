// libpng (pkg-config libpng; Debian: libpng-dev). Swift cannot use libpng's setjmp error
// handling, so decoding goes through the small C target CCodecs.
#include <png.h>
