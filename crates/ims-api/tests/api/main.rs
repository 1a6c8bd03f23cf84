//! HTTP tests of the real server: each test starts it on port 0 with its own redis-server and
//! its own database (a SQLite file, or a fresh PostgreSQL database when
//! `IMS_TEST_POSTGRES_URL` is set), and talks to it as a client would.

mod auth;
mod auth_without_redis;
mod binary;
mod cache;
mod catalog;
mod cluster;
mod connections;
mod dashboard;
mod eviction;
mod health;
mod helpers;
mod items;
mod l1;
mod money;
mod openapi;
mod operations;
mod orders;
mod outbox;
mod races;
mod rate_limit;
mod reports;
mod seed;
mod text;
