//! Running a kernel build (Kbuild, through the recipe's `build.sh`) and its compiler
//! cache: shared by the two builders, [`crate::recipe`] (`build:` kernels) and
//! [`crate::tree`] (a git tree's commits), so that neither depends on the other.

pub mod ccache;
pub(crate) mod script;
