//! Push, fetch, pull and clone between repositories on this machine (the path transport).
