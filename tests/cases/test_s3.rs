//! Push, fetch and clone through an S3-compatible store (SeaweedFS on loopback).
