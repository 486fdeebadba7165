"""VNPay, the VNPAY payment gateway (Vietnam), API version 2.1.0: the payment URL
(the checkout), the IPN that reports its outcome, and the querydr and refund API.

Sources followed (VNPay's public documentation and sample code):
* "Hướng dẫn tích hợp hệ thống PAY", https://sandbox.vnpayment.vn/apis/docs/thanh-toan-pay/pay.html
  (the payment URL's parameters, its example URL, the IPN and return URL), and the Python
  sample code downloadable there (its vnpay.py signs and verifies with urllib.parse.quote_plus);
* "API querydr, refund", https://sandbox.vnpayment.vn/apis/docs/truy-van-hoan-tien/querydr&refund.html
  (the two server-to-server commands, their '|'-joined checksums and response codes);
* "Bảng mã lỗi", https://sandbox.vnpayment.vn/apis/docs/bang-ma-loi/ (vnp_ResponseCode and
  vnp_TransactionStatus).
"""
