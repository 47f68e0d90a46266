import Foundation
/// Billing: meter → rollups → rating → invoices → exports. Filled in by the metering issue.
public enum BillingModule {}
