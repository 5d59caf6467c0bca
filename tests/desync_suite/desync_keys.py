"""The chunk encryption keys of desync's tests (``encrypt_test.go``: ``testEncryptionKey``,
``otherEncryptionKey``), hex-encoded 256-bit keys; the ports use the same ones, so a
value desync's tests pin (such as ``.aes-256-gcm-50d64035``) is pinned here too."""

TEST_KEY = "6368616e676520746869732070617373776f726420746f206120736563726574"
OTHER_KEY = "746f74616c6c7920646966666572656e74206b65792075736564206865726521"
