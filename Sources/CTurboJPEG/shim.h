// libjpeg-turbo's TurboJPEG API (pkg-config libturbojpeg; Debian: libturbojpeg0-dev).
#include <turbojpeg.h>
