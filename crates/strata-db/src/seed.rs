//! Bulk generation of realistic demo and load-test data.
//! Never used by the request path; writes with large multi-row INSERTs.
