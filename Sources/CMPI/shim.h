// Open MPI's C API (pkg-config ompi-c; Debian: libopenmpi-dev). MPI's handles (the world
// communicator, data types, operations) are macros over globals that Swift cannot import, so
// they are exposed here as static inline getters.
#include <mpi.h>

static inline MPI_Comm cmpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype cmpi_float(void)  { return MPI_FLOAT; }
static inline MPI_Datatype cmpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op cmpi_sum(void)          { return MPI_SUM; }
static inline void *cmpi_in_place(void)      { return MPI_IN_PLACE; }
static inline int cmpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int cmpi_success(void)         { return MPI_SUCCESS; }
static inline MPI_Status *cmpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
